package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"falg/test/lab"
)

// relayConfig is the labeler's configuration: one relayed bulk service.
const relayConfig = `
services:
  - name: relaybulk
    listen: ["10.0.0.1:5204"]
    protocol: none
    dataplane: relay
    source: router
    default: ["10.0.1.2:5201"]
`

// relayBench measures bulk through falg's splice (port 5202), the relay
// (the labeler without a label, port 5204) and a Go io.Copy proxy running
// in this process (port 5205): throughput, machine CPU and the proxy
// process's CPU per GiB moved.
func relayBench(ctx context.Context, l *lab.Lab, dir string, falgPid int) error {
	cfg := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfg, []byte(relayConfig), 0o644); err != nil {
		return err
	}
	rl := l.Router.Command(ctx, *relayBin, "-c", cfg, "-label", "", "-log-level", "warn")
	var out strings.Builder
	var mu sync.Mutex
	rl.Stdout = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	rl.Stderr = rl.Stdout
	if err := l.StartCmd(rl); err != nil {
		return err
	}
	defer l.Wait(rl)
	defer rl.Process.Signal(os.Interrupt)
	for deadline := time.Now().Add(10 * time.Second); ; {
		mu.Lock()
		ready := strings.Contains(out.String(), "ready")
		mu.Unlock()
		if ready {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay did not start: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop, err := copyProxy(l.Router, "10.0.0.1:5205", "10.0.1.2:5201")
	if err != nil {
		return err
	}
	defer stop()

	targets := []struct {
		name, addr string
		pid        int
	}{
		{"falg splice", "10.0.0.1:5202", falgPid},
		{"falg relay", "10.0.0.1:5204", rl.Process.Pid},
		{"Go io.Copy", "10.0.0.1:5205", os.Getpid()},
	}
	type sample struct{ gbps, machine, proc float64 }
	res := make([][]sample, len(targets))
	for range *rounds {
		for i, tg := range targets {
			sys0, p0 := systemCPU(), cpuTime(tg.pid)
			gbps, bytes, err := iperfBytes(ctx, l.Clients[0], tg.addr)
			if err != nil {
				return fmt.Errorf("%s: %w", tg.name, err)
			}
			gib := float64(bytes) / (1 << 30)
			res[i] = append(res[i], sample{gbps, (systemCPU() - sys0).Seconds() / gib, (cpuTime(tg.pid) - p0).Seconds() / gib})
		}
	}
	fmt.Println("bulk data planes, one TCP stream, client -> backend (iperf3; CPU seconds per GiB moved)")
	fmt.Printf("  %-12s %-22s %8s %14s %14s\n", "", "Gbit/s per round", "median", "machine s/GiB", "proxy s/GiB")
	for i, tg := range targets {
		var g, m, p []float64
		for _, s := range res[i] {
			g, m, p = append(g, s.gbps), append(m, s.machine), append(p, s.proc)
		}
		fmt.Printf("  %-12s %-22s %8.1f %14.2f %14.3f\n", tg.name, fmtList(g), median(g), median(m), median(p))
	}
	fmt.Println("  proxy s/GiB: CPU of the process that moves the bytes (falg's is ~0 once spliced;")
	fmt.Println("    the io.Copy proxy runs inside the bench process)")
	fmt.Println()
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// iperfBytes is iperf with the bytes received.
func iperfBytes(ctx context.Context, client *lab.NS, addr string) (float64, int64, error) {
	host, port, _ := net.SplitHostPort(addr)
	out, err := client.Command(ctx, "iperf3", "-c", host, "-p", port, "-t", strconv.Itoa(*seconds), "-J").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("iperf3 -c %s: %v %s", addr, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, 0, err
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, res.End.SumReceived.Bytes, nil
}

// copyProxy is the baseline user-space proxy: accept on listen in ns,
// connect to backend, io.CopyBuffer both ways through a 32 KiB buffer
// (the wrappers hide ReadFrom/WriteTo, so Go does not splice).
func copyProxy(ns *lab.NS, listen, backend string) (func(), error) {
	ln, err := ns.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	return lab.Serve(ln, func(c net.Conn) {
		b, err := ns.Dial(context.Background(), "tcp", backend)
		if err != nil {
			return
		}
		defer b.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.CopyBuffer(struct{ io.Writer }{b}, struct{ io.Reader }{c}, make([]byte, 32<<10))
			b.(*net.TCPConn).CloseWrite()
		}()
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{b}, make([]byte, 32<<10))
		c.(*net.TCPConn).CloseWrite()
		<-done
	}), nil
}
