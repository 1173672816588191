package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"falg/nfq"
	"falg/seqnat"
)

// flowRow is one spliced pair as falg flows shows it.
type flowRow struct {
	Client   netip.AddrPort `json:"client"`
	Asked    netip.AddrPort `json:"asked"`
	Backend  netip.AddrPort `json:"backend"`
	Source   netip.AddrPort `json:"source"` // what the backend sees
	Protocol string         `json:"protocol"`
	Service  string         `json:"service"`
	Name     string         `json:"name"`
	Age      string         `json:"age"`
	BytesIn  uint64         `json:"bytes_from_client"`
	BytesOut uint64         `json:"bytes_to_client"`
	State    string         `json:"state"`
}

func newFlowsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "List the spliced flows in the kernel's conntrack table",
		Long: `flows lists the conntrack entries that carry falg's flow mark, so it shows
flows that outlived the falg that made them. A running falg adds what it
recorded: service, protocol, name and age.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			ct, err := seqnat.Dial()
			if err != nil {
				return err
			}
			defer ct.Close()
			entries, err := ct.List(c.FlowMark(), c.FlowMark())
			if err != nil {
				return err
			}
			records := map[[2]netip.AddrPort]nfq.Record{}
			if resp, err := adminClient(c.Admin).Get("http://falg/records"); err == nil {
				var rs []nfq.Record
				json.NewDecoder(resp.Body).Decode(&rs)
				resp.Body.Close()
				for _, r := range rs {
					records[[2]netip.AddrPort{r.Client, r.Asked}] = r
				}
			}
			rows := make([]flowRow, 0, len(entries))
			for _, e := range entries {
				r := flowRow{
					Client: e.Orig.Src, Asked: e.Orig.Dst, Backend: e.Reply.Src, Source: e.Reply.Dst,
					Protocol: "tcp", Name: "-", Service: "-", Age: "-",
					BytesIn: e.CountersOrig.Bytes, BytesOut: e.CountersReply.Bytes,
				}
				if e.Proto == 17 {
					r.Protocol = "udp"
				}
				if e.TCP != nil {
					r.State = tcpState(e.TCP.State)
				}
				if rec, ok := records[[2]netip.AddrPort{e.Orig.Src, e.Orig.Dst}]; ok {
					r.Protocol, r.Service, r.Name = rec.Protocol, rec.Service, rec.Name
					r.Age = time.Since(rec.Start).Round(time.Second).String()
				}
				rows = append(rows, r)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLIENT\tASKED\tBACKEND\tPROTOCOL\tSERVICE\tNAME\tAGE\tIN\tOUT\tSTATE")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Client, r.Asked, r.Backend,
					r.Protocol, r.Service, r.Name, r.Age, r.BytesIn, r.BytesOut, r.State)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func tcpState(s uint8) string {
	names := []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprint(s)
}
