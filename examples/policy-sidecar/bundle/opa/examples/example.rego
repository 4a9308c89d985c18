# OPA's REST API documentation example, unchanged in meaning: a request is allowed when the
# input's example flag is true; public servers are those on a network reachable from the
# internet.
package opa.examples

import input.example.flag

allow_request if flag == true

public_servers contains server if {
    some server in data.opa.examples.servers
    some port in server.ports
    some p in data.opa.examples.ports
    p.id == port
    some network in data.opa.examples.networks
    network.id == p.network
    network.public == true
}

test_flag_allows if allow_request with input as {"example": {"flag": true}}
test_no_flag_no_allow if not allow_request with input as {"example": {"flag": false}}
test_one_public_server if count(public_servers) == 1
