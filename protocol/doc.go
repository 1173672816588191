// Package protocol holds falg's parsers: pure functions over the first bytes
// of a connection that decide where it goes. No parser performs I/O.
package protocol
