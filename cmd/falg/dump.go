package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"falg/config"
	"falg/dump"
	"falg/protocol"
	"falg/route"
)

func newDumpCmd(g *globals) *cobra.Command {
	var file string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "dump",
		Short: "Show packets as falg sees them: headers, the parsed name, the decision",
		Long: `dump prints one line per packet. With -r it reads a pcap or pcapng file;
otherwise it logs live packets of the configured listens through an NFLOG
group of its own table (inet falg_dump), which takes nothing from falg's queue.
With a configuration, each first data segment to a listen is parsed and shown
with the route it would take.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var c *config.Config
			if cmd.Flags().Changed("config") {
				var err error
				if c, err = g.load(); err != nil {
					return err
				}
			} else if _, err := os.Stat(g.config); err == nil {
				c, _ = g.load()
			}
			pr := &dump.Printer{W: cmd.OutOrStdout(), Verbose: verbose}
			if c != nil {
				d, err := newDecider(c)
				if err != nil {
					return err
				}
				pr.Decider = d
			}
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				return dump.ReadPcap(f, pr.Print)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return live(ctx, c, pr)
		},
	}
	cmd.Flags().StringVarP(&file, "read", "r", "", "read packets from a pcap or pcapng file")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "also print every decoded layer")
	return cmd
}

func live(ctx context.Context, c *config.Config, pr *dump.Printer) error {
	var o dump.LiveOptions
	if c != nil {
		o.Mark = c.InjectMark()
		for _, s := range c.Services {
			for _, l := range s.Listen {
				if s.Protocol.TCP() {
					o.Listens = append(o.Listens, dump.Listen{Proto: dump.ProtoTCP, Addr: l.Addr, Port: l.Port})
				}
				if s.Protocol.UDP() {
					o.Listens = append(o.Listens, dump.Listen{Proto: dump.ProtoUDP, Addr: l.Addr, Port: l.Port})
				}
			}
		}
	}
	lv, err := dump.OpenLive(ctx, o)
	if err != nil {
		return err
	}
	defer lv.Close()
	for {
		p, err := lv.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, dump.ErrClosed) {
				return nil
			}
			return err
		}
		if err := pr.Print(p); err != nil {
			return err
		}
	}
}

// decider parses the payload of each packet to a listen, as if it were the
// first data of its flow, and routes the name it finds.
type decider struct {
	services []*config.Service
	tables   []*route.Table
}

func newDecider(c *config.Config) (*decider, error) {
	d := &decider{}
	for i := range c.Services {
		s := &c.Services[i]
		t, err := route.New(s)
		if err != nil {
			return nil, err
		}
		d.services = append(d.services, s)
		d.tables = append(d.tables, t)
	}
	return d, nil
}

func (d *decider) Decide(_ *dump.Packet, l *dump.Line) {
	if len(l.Payload) == 0 {
		return
	}
	dst := netip.AddrPortFrom(l.Dst, l.DstPort)
	for i, s := range d.services {
		if !listens(s, dst) {
			continue
		}
		proto := string(s.Protocol)
		if l.Proto == dump.ProtoUDP {
			if s.Protocol != config.DNS {
				return
			}
			q, err := protocol.ParseDNSQuery(l.Payload, make([]byte, 0, 255))
			if err != nil {
				l.Note = "dns: " + err.Error()
				return
			}
			d.route(i, strings.TrimSuffix(strings.ToLower(string(q.Name)), "."), l)
			return
		}
		p, err := protocol.New(proto, protocol.Options{})
		if err != nil {
			return
		}
		switch dec := p.Feed(l.Payload); dec.Verdict {
		case protocol.NeedMore:
			l.Note = proto + ": needs more bytes than this segment"
		case protocol.Malformed:
			l.Note = fmt.Sprintf("%s: %v", proto, dec.Err)
		case protocol.Decided:
			d.route(i, dec.Name, l)
		}
		return
	}
}

func (d *decider) route(i int, name string, l *dump.Line) {
	l.Name = name
	m, ok := d.tables[i].Lookup(name)
	if !ok {
		l.Decision = "reject"
		return
	}
	bs := make([]string, len(m.Backends()))
	for j, b := range m.Backends() {
		bs[j] = b.String()
	}
	where := "default"
	if m.Route != route.Default {
		where = fmt.Sprintf("routes[%d]", m.Route)
	}
	l.Decision = fmt.Sprintf("%s.%s %s", d.services[i].Name, where, strings.Join(bs, ","))
}

func listens(s *config.Service, dst netip.AddrPort) bool {
	for _, l := range s.Listen {
		if l.Port == dst.Port() && (l.Any() || l.Addr == dst.Addr()) {
			return true
		}
	}
	return false
}
