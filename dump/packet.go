package dump

import (
	"io"
	"time"
)

// Packet is one packet as falg sees it: an IP packet without link layer.
type Packet struct {
	// Time is when the packet was captured; for live packets, when the
	// log message was read.
	Time time.Time
	// Data starts at the IPv4 or IPv6 header. It is nil when Err is set.
	Data []byte
	// Hook names the netfilter hook that logged a live packet
	// ("prerouting" or "output"); empty for packets read from a file.
	Hook string
	// Err says why a captured frame carried no IP packet (for example an
	// ARP frame, or a link header cut short).
	Err error
}

// A Decider adds what falg would do with a decoded packet: it may set
// l.Name (the parsed name or instruction), l.Decision (the chosen backend or
// verdict) and l.Note. It is called only for packets that decoded without
// error and must not keep p or l after it returns.
type Decider interface {
	Decide(p *Packet, l *Line)
}

// DeciderFunc adapts a function to the Decider interface.
type DeciderFunc func(p *Packet, l *Line)

// Decide calls f(p, l).
func (f DeciderFunc) Decide(p *Packet, l *Line) { f(p, l) }

// A Printer decodes packets and writes one line per packet to W. The zero
// value is not usable: W must be set. A Printer is not safe for concurrent
// use; it reuses one Line for every packet.
type Printer struct {
	// W receives the lines.
	W io.Writer
	// Decider, if not nil, adds falg's view of each decoded packet.
	Decider Decider
	// Verbose adds every gopacket layer of the packet below its line.
	Verbose bool

	line Line
}

// Print decodes p and writes its line. A packet that does not decode is
// written as an ERR line; Print returns only errors from writing to W.
func (pr *Printer) Print(p *Packet) error {
	l := &pr.line
	if p.Err != nil {
		l.reset()
		l.Err = p.Err
	} else if Decode(p.Data, l) == nil && pr.Decider != nil {
		pr.Decider.Decide(p, l)
	}
	l.Time = p.Time
	l.Hook = p.Hook
	return l.Format(pr.W, pr.Verbose)
}
