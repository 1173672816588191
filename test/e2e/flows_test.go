package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/textproto"
	"testing"
	"time"
)

type flowRow struct {
	Client, Asked, Backend, Source string
	Protocol, Service, Name        string
	BytesIn                        uint64 `json:"bytes_from_client"`
	BytesOut                       uint64 `json:"bytes_to_client"`
	State                          string
}

func listFlows(t *testing.T, f *falg) []flowRow {
	t.Helper()
	var rows []flowRow
	if err := json.Unmarshal([]byte(run(t, f.lab.Router, falgBin, "flows", "-c", f.cfg, "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestFlowsAndRestart: falg flows lists a live spliced flow with its name;
// a falg killed and started again leaves the flow alone (it moves data
// throughout) and still lists it, from the kernel's table, without the name
// it cannot know.
func TestFlowsAndRestart(t *testing.T) {
	l, f, _ := failuresLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := l.Clients[0].Dial(ctx, "tcp", "[fd00::1]:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: hold.example\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(c))
	if _, err := tp.ReadLine(); err != nil {
		t.Fatal(err)
	}
	tp.ReadMIMEHeader()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().String()

	find := func(rows []flowRow) *flowRow {
		for i := range rows {
			if rows[i].Client == local {
				return &rows[i]
			}
		}
		t.Fatalf("flow %s not listed: %+v", local, rows)
		return nil
	}
	r := find(listFlows(t, f))
	if r.Asked != "[fd00::1]:80" || r.Backend != "[fd00:1::2]:9000" || r.Name != "hold.example" ||
		r.Service != "http" || r.Protocol != "http" || r.State != "ESTABLISHED" {
		t.Errorf("flow row %+v", r)
	}

	// kill -9 leaves the table, and the new falg replaces it in one
	// transaction: the NAT hooks never go away, so data may flow at any
	// moment. (SIGTERM is an uninstall: see docs/design.md.)
	f.kill9()
	if _, err := c.Write(make([]byte, 50000)); err != nil {
		t.Fatalf("write with no falg: %v", err)
	}
	f.start()
	if _, err := c.Write(make([]byte, 50000)); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = find(listFlows(t, f))
		if r.BytesIn >= 100000 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.BytesIn < 100000 || r.Name != "-" || r.State != "ESTABLISHED" {
		t.Errorf("after restart: %+v, want the bytes counted and no name", r)
	}
	f.stop()
}
