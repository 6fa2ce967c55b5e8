//! The gss role: an authoritative DNS server for the delegated zone whose answers
//! follow the aggregate health of each site.
