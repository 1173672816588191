package e2e

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"falg/test/lab"
)

const limitsConfig = `
workers: 2
services:
  - name: rated
    listen: ["10.0.0.1:80"]
    protocol: http
    limits: { client_rate: 1, client_burst: 3 }
    default: ["10.0.1.2:8080"]
  - name: narrow
    listen: ["10.0.0.1:443"]
    protocol: tls
    timeouts: { first_data: 3s }
    limits: { max_pending: 2 }
    default: ["10.0.1.2:8443"]
`

// TestLimits: a client past its rate is refused while another client is
// served; a service past its max_pending refuses new SYNs.
func TestLimits(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 2, Backends: 1})
	serve(t, l.Backends[0], 8080, false)
	serve(t, l.Backends[0], 8443, true)
	f := startFalg(t, l, limitsConfig)
	defer f.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ok, refused := 0, 0
	for range 6 {
		_, err := exchange(ctx, l.Clients[0], "10.0.0.1:80", "a.example", false, 100)
		switch {
		case err == nil:
			ok++
		case errors.Is(err, syscall.ECONNREFUSED):
			refused++
		default:
			t.Errorf("rated client: %v", err)
		}
	}
	if ok < 3 || refused < 2 {
		t.Errorf("rated client: %d served, %d refused; want the burst of 3 served and the rest mostly refused", ok, refused)
	}
	if _, err := exchange(ctx, l.Clients[1], "10.0.0.1:80", "a.example", false, 100); err != nil {
		t.Errorf("the other client: %v", err)
	}

	// Two silent clients hold the narrow service's pending slots.
	var held []net.Conn
	for range 2 {
		c, err := l.Clients[1].Dial(ctx, "tcp", "10.0.0.1:443")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	f.waitStat("pending", 2)
	if _, err := l.Clients[0].Dial(ctx, "tcp", "10.0.0.1:443"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("third flow in setup: %v, want refused", err)
	}
	if _, err := exchange(ctx, l.Clients[1], "10.0.0.1:80", "a.example", false, 100); err != nil {
		t.Errorf("another service while narrow is full: %v", err)
	}
	if s := f.stats(); s["limited"] < 3 {
		t.Errorf("limited = %d: %v", s["limited"], s)
	}
}
