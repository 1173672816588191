// Package lab builds a network-namespace lab for falg's end-to-end tests and
// for the `falg demo` command: clients and backends on two segments joined by
// a router namespace, IPv4 and IPv6, with helpers to run programs and Go code
// inside each namespace and a teardown that leaves nothing behind.
//
// # Topology
//
// The topology is fixed:
//
//	client0 eth0 10.0.0.2/24 fd00::2/64 ─┐                      ┌─ backend0 eth0 10.0.1.2/24 fd00:1::2/64
//	client1 eth0 10.0.0.3/24 fd00::3/64 ─┤ c0,c1..         b0,b1.. ├─ backend1 eth0 10.0.1.3/24 fd00:1::3/64
//	                                     └─ cbr ── router ── bbr ─┘
//	                          10.0.0.1/24 fd00::1/64   10.0.1.1/24 fd00:1::1/64
//
// Client i is 10.0.0.(2+i) and fd00::(2+i); backend i is 10.0.1.(2+i) and
// fd00:1::(2+i). Every client and backend has its default routes (v4 and v6)
// via the router, so a flow whose backend sees the client's own address
// (falg's `source: client`) returns through the router. Inside the router,
// bridge cbr joins the client veths (c0, c1, ...) and bridge bbr the backend
// veths (b0, b1, ...); in clients and backends the interface is eth0. All
// veths are created directly inside their namespaces, so no link ever appears
// in the root namespace.
//
// The router forwards IPv4 and IPv6 and has reverse-path filtering off (falg
// injects packets carrying other hosts' source addresses). IPv6 addresses are
// added with nodad and duplicate address detection is off, so addresses are
// usable at once. ARP and neighbour discovery retransmit after 100 ms instead of
// 1 s, so a solicitation lost while the kernel still settles a new link costs
// little. The router's bridges do not pass bridged frames to its IP hooks
// (bridge-nf-call-* off). Offloads are left as the kernel sets them (TSO/GSO on on
// veth): falg must work with GSO segments, and DESIGN.md measured that it
// does. New returns only when TCP reaches every backend from every client and
// every client from every backend, over IPv4 and IPv6.
//
// Building a lab of 2 clients and 2 backends takes about 20 ms on an idle
// machine (one ip process for the namespaces, one for the links, one per
// namespace run concurrently) and Close about 5 ms: the kernel destroys the
// namespaces in the background, which can slow a lab built right after.
//
// # Names and cleanup
//
// Namespaces are named <prefix>-<8 hex>-router, -client0, -backend0, ...
// with a fresh random id per lab. New writes a marker file
// /run/falg-lab/<prefix>-<id> holding the creating process's pid and start
// time before it creates any namespace, and Close removes it last, so
// CleanupStale can find labs whose creator was killed and remove them.
//
// # Running code inside a namespace
//
// NS.Command runs programs through `ip netns exec`: Go's SysProcAttr cannot
// setns, and an unstarted exec.Cmd gives no control over the thread that
// forks it, while `ip netns exec` enters the namespace and execs the program
// in place, so cmd.Process is the program itself (pid, signals and exit
// status are its own) and it sees a /sys that matches the namespace.
// NS.Do runs Go code on a dedicated OS thread switched into the namespace
// with setns; sockets created there stay in that namespace for their life.
package lab
