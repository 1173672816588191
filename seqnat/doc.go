// Package seqnat computes per-flow sequence-number offsets and hands a flow
// to the kernel as a conntrack entry with NAT and seqadj, over ctnetlink.
package seqnat
