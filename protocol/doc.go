// Package protocol holds falg's parsers: pure functions over the first bytes
// of a connection that decide where it goes. No parser performs I/O.
//
// A stream parser (see [New]) is fed the whole client stream seen so far, a
// growing prefix of at most [MaxFirstBytes] bytes, and answers a [Decision]:
// [NeedMore], [Decided] (with the routing name and how many bytes falg must
// consume) or [Malformed]. Once the engine has picked and tried a backend it
// asks the parser for the bytes the client must get for that [Outcome].
//
// Besides the stream parsers the package parses PROXY protocol headers
// ([ParseProxyHeader], [AppendProxyV1], [AppendProxyV2]) and DNS queries
// ([ParseDNSQuery], [ParseDNSTCP], [AppendDNSError]).
//
// Parsers do not allocate on the common path except for the Name and ALPN
// strings of a final Decision (one small string per connection).
package protocol
