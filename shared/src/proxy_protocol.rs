//! PROXY protocol v1/v2 headers (HAProxy's `doc/proxy-protocol.txt`): what the lb
//! sends to backends on proxied connections, and the v2 `LOCAL` header probes send.
