// Package nfq reads the packets the ruleset queues to falg and runs the
// per-flow handshake engine: it answers the client's SYN itself, collects the
// first bytes, asks a protocol parser where the flow goes, opens the backend
// side and hands the finished flow to the kernel through package seqnat.
package nfq
