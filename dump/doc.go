// Package dump shows packets as falg sees them.
//
// It decodes IPv4 and IPv6 packets (TCP, UDP, ICMP and ICMPv6) into a Line,
// lets a Decider add what falg would do with the packet (the parsed name or
// instruction and the routing decision), and writes one stable, greppable
// line per packet, tcpdump-like:
//
//	21:10:27.123456 TCP 10.0.0.2:40000 > 10.0.0.1:443 [S] seq=1000 win=64240 len=0 <mss 1460,sackOK,wscale 7>
//	21:10:27.124001 TCP 10.0.0.2:40000 > 10.0.0.1:443 [P.] seq=1001 ack=2001 win=502 len=517 | name=a.example decision=10.0.1.2:443
//
// Packets come from a capture file (ReadPcap: pcap or pcapng, Ethernet, raw
// IP, Linux SLL/SLL2 and BSD loopback link types) or live from the kernel
// (OpenLive), which logs copies through NFLOG from an nftables table of its
// own, so it never takes a packet away from falg's queue.
package dump
