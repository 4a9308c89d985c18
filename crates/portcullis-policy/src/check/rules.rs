//! Checks across rules: one `default` per rule, one kind of rule per path, no rule where
//! a data document is, no recursion.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};

use super::body::Read;
use super::{COMPILE_ERROR, Context, Errors, Kind, RECURSION, RuleInfo, TYPE_ERROR, data_path};

/// Two `default` rules for one path: regorus keeps one silently, OPA refuses.
pub(super) fn check_defaults(context: &Context<'_>, errors: &mut Errors) {
    let mut seen = HashSet::new();
    for info in context.rules.iter().filter(|info| info.default) {
        if !seen.insert(&info.path) {
            errors.push(
                context,
                info.module,
                info.rule.span(),
                TYPE_ERROR,
                format!("multiple default rules {} found", data_path(&info.path)),
            );
        }
    }
}

/// A path defined by rules of different kinds (a complete rule and a set, a function and
/// a rule).
pub(super) fn check_kinds(context: &Context<'_>, errors: &mut Errors) {
    let mut first = HashMap::new();
    for info in context.rules.iter().filter(|info| !info.default) {
        let other = *first.entry(&info.path).or_insert(info);
        if !std::ptr::eq(other, info) && other.kind != info.kind {
            let at = context
                .modules
                .get(other.module)
                .map(|s| format!("{}:{}", s.file, other.rule.span().line))
                .unwrap_or_default();
            errors.push(
                context,
                info.module,
                info.rule.span(),
                TYPE_ERROR,
                format!(
                    "conflicting rules {} found: {} here, {} at {at}",
                    data_path(&info.path),
                    info.kind.describe(),
                    other.kind.describe()
                ),
            );
        }
    }
}

/// A rule whose head names one whole path (`a`, `a.b`, `f(x)`, `s contains x`) beside a
/// rule or package below it (`a.b.c`, `package ….a.b.x`): the first owns the whole
/// document, so OPA refuses the pair, while regorus answers with one and hides the other.
pub(super) fn check_overlaps(context: &Context<'_>, errors: &mut Errors) {
    let owners: HashMap<&[String], &RuleInfo<'_>> = context
        .rules
        .iter()
        .filter(|info| info.exact && info.kind != Kind::PartialObject)
        .map(|info| (info.path.as_slice(), info))
        .collect();
    let owner_above = |path: &[String]| {
        (1..path.len()).find_map(|n| path.get(..n).and_then(|prefix| owners.get(prefix)))
    };
    let mut reported = HashSet::new();
    for info in &context.rules {
        let Some(owner) = owner_above(&info.path) else {
            continue;
        };
        if reported.insert(&info.path) {
            errors.push(
                context,
                info.module,
                info.rule.span(),
                TYPE_ERROR,
                format!(
                    "rule {} conflicts with [{}]: {} owns the whole document",
                    data_path(&owner.path),
                    data_path(&info.path),
                    data_path(&owner.path)
                ),
            );
        }
    }
    for (module, package) in context.packages.iter().enumerate() {
        let Some(owner) = owner_above(&[package.as_slice(), &[String::new()]].concat()) else {
            continue;
        };
        if let Some(source) = context.modules.get(module) {
            errors.push(
                context,
                module,
                &source.module.package.span,
                TYPE_ERROR,
                format!(
                    "package {} conflicts with rule {} defined at {}:{}",
                    data_path(package),
                    data_path(&owner.path),
                    context.modules.get(owner.module).map_or("", |s| s.file),
                    owner.rule.span().line
                ),
            );
        }
    }
}

/// A rule at a path where a bundle's data has a document (or under a data value that is
/// not an object): regorus silently answers with the data and ignores the rule.
pub(super) fn check_data_conflicts(
    context: &Context<'_>,
    data: &[&Map<String, Value>],
    errors: &mut Errors,
) {
    let mut reported = HashSet::new();
    for info in &context.rules {
        let Some(at) = data.iter().find_map(|data| document_at(data, &info.path)) else {
            continue;
        };
        if reported.insert(&info.path) {
            errors.push(
                context,
                info.module,
                info.rule.span(),
                COMPILE_ERROR,
                format!(
                    "rule {} conflicts with the data document at {}: a path is either a rule or data",
                    data_path(&info.path),
                    data_path(&at)
                ),
            );
        }
    }
}

/// Where `data` has a document that a rule at `path` would clash with: at `path` itself,
/// or a value that is not an object on the way there.
fn document_at(data: &Map<String, Value>, path: &[String]) -> Option<Vec<String>> {
    let mut object = data;
    for (n, segment) in path.iter().enumerate() {
        match object.get(segment)? {
            Value::Object(inner) if n + 1 < path.len() => object = inner,
            _ => return Some(path.iter().take(n + 1).cloned().collect()),
        }
    }
    None
}

/// A rule that depends on itself, directly or through others (`reads` holds, per rule,
/// the paths below `data` it reads). Reading a path reads every rule at, under or above
/// it, a segment known only at evaluation standing for any, as OPA counts it.
pub(super) fn check_recursion(context: &Context<'_>, reads: &[Vec<Read>], errors: &mut Errors) {
    // One node per rule path; the first definition locates it.
    let mut nodes: BTreeMap<&[String], usize> = BTreeMap::new();
    let mut first_rule = Vec::new();
    let mut node_of = Vec::with_capacity(context.rules.len());
    for (index, info) in context.rules.iter().enumerate() {
        let next = nodes.len();
        let node = *nodes.entry(info.path.as_slice()).or_insert(next);
        if node == next {
            first_rule.push(index);
        }
        node_of.push(node);
    }
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (rule, paths) in reads.iter().enumerate() {
        let Some(&from) = node_of.get(rule) else {
            continue;
        };
        let mut targets = HashSet::new();
        for read in paths {
            let fixed: Vec<String> = read.iter().map_while(Clone::clone).collect();
            // Rules under the fixed part of the path that match the rest…
            targets.extend(
                nodes
                    .range::<[String], _>((
                        std::ops::Bound::Included(fixed.as_slice()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(p, _)| p.starts_with(&fixed))
                    .filter(|(p, _)| related(p, read))
                    .map(|(_, n)| *n),
            );
            // …and rules above it.
            targets.extend(
                (0..fixed.len())
                    .filter_map(|n| fixed.get(..n).and_then(|prefix| nodes.get(prefix)).copied()),
            );
        }
        if let Some(out) = edges.get_mut(from) {
            out.extend(targets);
            out.sort_unstable();
            out.dedup();
        }
    }
    let paths: Vec<&[String]> = {
        let mut by_node = vec![&[][..]; nodes.len()];
        for (path, node) in &nodes {
            if let Some(slot) = by_node.get_mut(*node) {
                *slot = path;
            }
        }
        by_node
    };
    for component in strongly_connected(&edges) {
        let recursive = component.len() > 1
            || component
                .first()
                .is_some_and(|n| edges.get(*n).is_some_and(|out| out.contains(n)));
        if !recursive {
            continue;
        }
        let Some(&start) = component.iter().min_by_key(|n| first_rule.get(**n)) else {
            continue;
        };
        let cycle = cycle_through(&edges, &component, start);
        let chain: Vec<String> = cycle
            .iter()
            .filter_map(|n| paths.get(*n))
            .map(|p| data_path(p))
            .collect();
        let Some(info) = first_rule.get(start).and_then(|r| context.rules.get(*r)) else {
            continue;
        };
        errors.push(
            context,
            info.module,
            info.rule.span(),
            RECURSION,
            format!(
                "rule {} is recursive: {}",
                data_path(&info.path),
                chain.join(" -> ")
            ),
        );
    }
}

/// Whether a rule at `path` is read by reading `read`: one is a prefix of the other, a
/// `None` segment matching any.
fn related(path: &[String], read: &[Option<String>]) -> bool {
    path.iter()
        .zip(read)
        .all(|(segment, want)| want.as_ref().is_none_or(|want| want == segment))
}

/// The strongly connected components of a graph (Tarjan's algorithm, without recursion).
#[expect(
    clippy::indexing_slicing,
    reason = "every index is a node number below edges.len(), the length of every vector indexed"
)]
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let count = edges.len();
    let mut index = vec![UNSEEN; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut components = Vec::new();
    for start in 0..count {
        if index[start] != UNSEEN {
            continue;
        }
        let mut work = vec![(start, 0_usize)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&(v, edge)) = work.last() {
            if let Some(&w) = edges[v].get(edge) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// The shortest cycle from `start` back to itself inside `component`, as the node list
/// `start … start`.
fn cycle_through(edges: &[Vec<usize>], component: &[usize], start: usize) -> Vec<usize> {
    let inside: HashSet<usize> = component.iter().copied().collect();
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in edges.get(v).into_iter().flatten() {
            if w == start {
                let mut cycle = vec![start];
                let mut at = v;
                while at != start {
                    cycle.push(at);
                    at = parent.get(&at).copied().unwrap_or(start);
                }
                cycle.push(start);
                cycle.reverse();
                return cycle;
            }
            if inside.contains(&w) && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}
