package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"falg/test/lab"
)

// scrape reads falg's Prometheus endpoint at addr from inside ns and
// returns each sample line's value by its name and labels.
func scrape(t *testing.T, ns *lab.NS, addr string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: falg\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	l := spliceLab(t, 1)
	f := startFalg(t, l, "metrics: 10.0.0.1:9180\n"+fmt.Sprintf(spliceConfig, "client"))
	defer f.stop()
	before := scrape(t, l.Router, "10.0.0.1:9180")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := exchange(ctx, l.Clients[0], "10.0.0.1:4443", "nope.example", true, 0); !isReset(err) {
		t.Fatalf("rejected SNI: %v", err)
	}
	if _, err := exchange(ctx, l.Clients[0], "10.0.0.1:443", "a.example", true, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(ctx, l.Clients[0], "10.0.0.1:81", "next.example", false, 1000); err != nil {
		t.Fatal(err)
	}
	// falg counts a flow's outcome just after handing it over, which can be
	// after the client already finished: wait for the last flow's count.
	last := `falg_flows_total{outcome="spliced",protocol="http",route="0",service="refusing"}`
	after := scrape(t, l.Router, "10.0.0.1:9180")
	for deadline := time.Now().Add(5 * time.Second); (after[last] == before[last] || after["falg_pending_flows"] != 0) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		after = scrape(t, l.Router, "10.0.0.1:9180")
	}
	for _, c := range []struct {
		name string
		want float64
	}{
		{`falg_flows_total{outcome="rejected",protocol="tls",route="none",service="tls-strict"}`, 1},
		{`falg_flows_total{outcome="spliced",protocol="tls",route="0",service="tls"}`, 1},
		{`falg_flows_total{outcome="spliced",protocol="http",route="0",service="refusing"}`, 1},
		{`falg_handover_seconds_count{service="tls"}`, 1},
		{`falg_backend_failures_total{backend="10.0.1.2:9",service="refusing"}`, 1},
	} {
		if d := after[c.name] - before[c.name]; d != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, d, c.want)
		}
	}
	if after["falg_queued_packets_total"] <= before["falg_queued_packets_total"] {
		t.Error("falg_queued_packets_total did not move")
	}
	if after["falg_pending_flows"] != 0 {
		t.Errorf("falg_pending_flows = %v after all flows ended", after["falg_pending_flows"])
	}
	if _, ok := after[`falg_queue_kernel_dropped_total{queue="0",reason="queue_full"}`]; !ok {
		t.Error("no kernel queue drop counters")
	}
	if after["falg_spliced_flows"] < 1 {
		t.Errorf("falg_spliced_flows = %v, want the spliced flows' conntrack entries", after["falg_spliced_flows"])
	}
}
