package authz

# Operators may deploy; everyone may read.
default allow := false

allow if input.action == "read"

allow if {
	input.action == "deploy"
	"operators" in input.groups
}

test_read_is_open if allow with input as {"action": "read", "groups": []}

test_deploy_needs_operators if not allow with input as {"action": "deploy", "groups": ["dev"]}

test_operators_deploy if allow with input as {"action": "deploy", "groups": ["operators"]}
