// Package relay is falg's user-space data plane: for services with
// `dataplane: relay` falg accepts the client's connection itself, reads the
// first bytes with the same protocol parsers the splice engine uses, picks a
// backend with the same route tables, connects to it and then copies the
// bytes both ways.
//
// A listen with an address binds a socket. A listen "*:port" (any
// destination) is transparent: the relay installs an nftables table
// (inet falg_relay) whose prerouting chain sends TCP to that port to the
// relay's socket with TPROXY and marks it, and an ip rule that routes marked
// packets to a local route table, so the accepted connection's local
// address is the destination the client asked for. With `source: client`
// the relay connects to the backend from the client's own address and port
// (IP_TRANSPARENT); the same table's socket-match rule brings the backend's
// answers, addressed to the client, to that socket. Everything installed is
// removed by Shutdown.
//
// Bytes are copied with splice(2) (Go's (*net.TCPConn).ReadFrom from
// another TCP connection): they never enter user space. A flow whose
// Interceptor hook is set is copied through a user-space buffer instead, so
// that the hook can see and replace each chunk. Half-close (FIN) is
// propagated per direction, a reset on either side resets the other, an
// idle flow is reset after Options.Idle, and Shutdown stops accepting,
// waits for flows to end until its deadline, then closes them.
//
// UDP services (protocol udp and dns) are relayed with one socket per
// client and backend, expiring after Options.UDPIdle without traffic; each
// DNS query is routed by its own name.
package relay
