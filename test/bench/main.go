// Command bench measures falg in one namespace lab, in one run, against
// baselines taken in the same run: bulk throughput through plain routing, a
// static nft DNAT and a falg-spliced flow (iperf3); the rate and router
// CPU of short TLS connections routed by SNI, direct, through a static
// DNAT, through that DNAT with the first packets of each connection passed
// through nfqueue to a reader that only accepts them (the queue floor,
// floor.go), and through falg; the rate of DNS queries; and falg's CPU
// per conntrack destroy event of other entries and of its own. With -relay
// it also compares, for bulk, the splice with the relay data plane
// (splice(2) in falg's process) and a plain Go io.Copy proxy, in
// throughput and CPU per GiB moved.
// Machines here are noisy: read the ratios, not the absolute numbers.
//
//	go run ./test/bench -falg bin/falg
//	go run ./test/bench -falg bin/falg -only tls -floor 1
//	go run ./test/bench -falg bin/falg -relay bin/labeler -only relay
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"falg/config"
	"falg/test/lab"
)

var (
	falgBin  = flag.String("falg", "bin/falg", "falg binary")
	seconds  = flag.Int("t", 5, "seconds per iperf3 run")
	conns    = flag.Int("n", 2000, "short connections per rate run")
	parallel = flag.Int("c", 4, "concurrent short-connection clients")
	rounds   = flag.Int("rounds", 2, "rounds of each bulk measurement (interleaved)")
	logLevel = flag.String("log", "warn", "falg log level")
	keepLog  = flag.String("keep-log", "", "copy falg's log here")
	profile  = flag.String("profile", "", "write a CPU profile of falg during the rate test here")
	relayBin = flag.String("relay", "", "examples/labeler binary: also measure the relay data plane and a Go io.Copy proxy")
	only     = flag.String("only", "", "run only this part: bulk, relay, tls, dns or events")
	workers  = flag.Int("workers", 2, "falg's workers (queues)")
)

// want reports whether the part named is to be run.
func want(part string) bool { return *only == "" || *only == part }

const benchConfig = `
services:
  - name: bulk
    listen: ["10.0.0.1:5202"]
    protocol: none
    default: ["10.0.1.2:5201"]
  - name: tls
    listen: ["10.0.0.1:443"]
    protocol: tls
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.3:8443"]
    default: reject
  - name: dns
    listen: ["10.0.0.1:53"]
    protocol: dns
    routes:
      - match: ["a.example."]
        backends: ["10.0.1.2:53"]
      - match: ["b.example."]
        backends: ["10.0.1.3:53"]
    default: reject
`

func main() {
	flag.Parse()
	if *floorReader {
		if err := runFloorReader(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: floor reader:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	l, err := lab.New(ctx, lab.Options{Clients: 1, Backends: 2, Prefix: "falg-bench"})
	if err != nil {
		return err
	}
	defer l.Close()
	client, router := l.Clients[0], l.Router

	if _, err := l.Start(l.Backends[0], ctx, "iperf3", "-s", "-p", "5201"); err != nil {
		return err
	}
	// The TLS backend listens on a port per path: 8443 for falg's
	// connections, 8444 direct, 8445 through the static DNAT, 8446 through
	// the queue floor. Paths that shared one would meet the tuples of each
	// other's past connections (a client port used again), and conntrack
	// would remap ports for some of them.
	for _, port := range []int{8443, 8444, 8445, 8446} {
		stop, err := serveTLS(l.Backends[1], port)
		if err != nil {
			return err
		}
		defer stop()
	}

	// Static DNAT baseline on port 5203, in its own table.
	dnat := `table ip bench {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.0.0.1 tcp dport 5203 dnat to 10.0.1.2:5201
		ip daddr 10.0.0.1 tcp dport 5443 dnat to 10.0.1.3:8445
		ip daddr 10.0.0.1 tcp dport 5444 dnat to 10.0.1.3:8446
		ip daddr 10.0.0.1 udp dport 5353 dnat to 10.0.1.2:53
		ip daddr 10.0.0.1 udp dport 5354 dnat to 10.0.1.3:53
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
	}
}
`
	nftCmd := router.Command(ctx, "nft", "-f", "-")
	nftCmd.Stdin = strings.NewReader(dnat)
	if out, err := nftCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dnat table: %v: %s", err, out)
	}

	dir, _ := os.MkdirTemp("", "falg-bench-")
	defer os.RemoveAll(dir)
	defer copyLog(dir)
	cfg := filepath.Join(dir, "falg.yaml")
	admin := filepath.Join(dir, "falg.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf("admin: %s\nworkers: %d\n%s", admin, *workers, benchConfig)), 0o644)
	falg := router.Command(ctx, *falgBin, "run", "-c", cfg, "--log-level", *logLevel)
	logf, _ := os.Create(filepath.Join(dir, "falg.log"))
	falg.Stdout, falg.Stderr = logf, logf
	if err := l.StartCmd(falg); err != nil {
		return err
	}
	if err := waitSocket(admin); err != nil {
		return fmt.Errorf("falg did not start: %v", err)
	}
	time.Sleep(300 * time.Millisecond)

	fmt.Printf("falg bench: one lab, one run, %d s per iperf3 run, %d rounds\n\n", *seconds, *rounds)
	pid := falg.Process.Pid
	if want("dns") {
		if err := dnsBench(ctx, l, pid, admin); err != nil {
			return err
		}
		fmt.Println()
	}
	if want("bulk") {
		if err := bulkBench(ctx, client); err != nil {
			return err
		}
	}
	if *relayBin != "" && want("relay") {
		if err := relayBench(ctx, l, dir, pid); err != nil {
			return err
		}
	}
	if want("tls") {
		if err := tlsBench(ctx, l, pid, admin); err != nil {
			return err
		}
	}
	if want("events") {
		c, err := config.Load(cfg)
		if err != nil {
			return err
		}
		fmt.Println()
		if err := eventsBench(l, pid, c.FlowMark()); err != nil {
			return err
		}
	}
	falg.Process.Signal(syscall.SIGTERM)
	l.Wait(falg)
	return nil
}

// bulkBench compares one iperf3 stream through plain routing, a static
// DNAT, a static DNAT with the client's TCP timestamps off (a spliced
// flow has none: it shows what that alone costs), and a falg splice.
func bulkBench(ctx context.Context, client *lab.NS) error {
	targets := []struct {
		name, addr string
		noTS       bool
	}{
		{"plain routing", "10.0.1.2:5201", false},
		{"static nft DNAT", "10.0.0.1:5203", false},
		{"DNAT, no TCP TS", "10.0.0.1:5203", true},
		{"falg splice", "10.0.0.1:5202", false},
	}
	timestamps := func(on bool) error {
		v := map[bool]string{true: "1", false: "0"}[on]
		if out, err := client.Command(ctx, "sysctl", "-qw", "net.ipv4.tcp_timestamps="+v).CombinedOutput(); err != nil {
			return fmt.Errorf("sysctl tcp_timestamps=%s: %v %s", v, err, out)
		}
		return nil
	}
	defer timestamps(true)
	bulk := make([][]float64, len(targets))
	for range *rounds {
		for i, tg := range targets {
			if err := timestamps(!tg.noTS); err != nil {
				return err
			}
			gbps, err := iperf(ctx, client, tg.addr)
			if err != nil {
				return fmt.Errorf("%s: %w", tg.name, err)
			}
			bulk[i] = append(bulk[i], gbps)
		}
	}
	fmt.Println("bulk, one TCP stream, client -> backend (iperf3, Gbit/s per round)")
	for i, tg := range targets {
		fmt.Printf("  %-16s %s   median %.1f\n", tg.name, fmtList(bulk[i]), median(bulk[i]))
	}
	dn, nots, sp := median(bulk[1]), median(bulk[2]), median(bulk[3])
	fmt.Printf("  ratio splice/DNAT %.2f   splice/plain %.2f   splice/(DNAT without timestamps) %.2f\n\n",
		sp/dn, sp/median(bulk[0]), sp/nots)
	return nil
}

// tlsBench compares short TLS connections direct, through a static DNAT,
// through the DNAT with four packets per connection queued to a reader
// that accepts them (the queue floor), and routed by SNI through falg.
func tlsBench(ctx context.Context, l *lab.Lab, pid int, admin string) error {
	client := l.Clients[0]
	st0, err := stats(admin) // earlier parts' packets are not this part's
	if err != nil {
		return err
	}
	floorPid, stopFloor, err := queueFloor(ctx, l)
	if err != nil {
		return err
	}
	floorDone := false
	defer func() {
		if !floorDone {
			stopFloor()
		}
	}()
	fmt.Printf("short TLS connections (handshake, 1 request, close), %d x %d clients, %d rounds\n", *conns, *parallel, *rounds)
	direct, _, err := rate(ctx, client, "10.0.1.3:8444", 0)
	if err != nil {
		return err
	}
	var dnatRate, dnatCPU, floorRate, floorCPU, floorProc, falgRate, falgCPU, falgProc []float64
	for r := range *rounds {
		sys0 := systemCPU()
		v, _, err := rate(ctx, client, "10.0.0.1:5443", 0)
		if err != nil {
			return err
		}
		dnatRate = append(dnatRate, v)
		dnatCPU = append(dnatCPU, float64((systemCPU()-sys0).Microseconds())/float64(*conns))
		sys0 = systemCPU()
		v, proc, err := rate(ctx, client, fmt.Sprintf("10.0.0.1:%d", floorPort), floorPid)
		if err != nil {
			return err
		}
		floorRate = append(floorRate, v)
		floorProc = append(floorProc, proc)
		floorCPU = append(floorCPU, float64((systemCPU()-sys0).Microseconds())/float64(*conns))
		if *profile != "" && r == *rounds-1 {
			go saveProfile(admin)
		}
		sys0 = systemCPU()
		v, proc, err = rate(ctx, client, "10.0.0.1:443", pid)
		if err != nil {
			return err
		}
		falgRate = append(falgRate, v)
		falgCPU = append(falgCPU, float64((systemCPU()-sys0).Microseconds())/float64(*conns))
		falgProc = append(falgProc, proc)
	}
	cpu := median(falgProc)
	fmt.Printf("  direct to backend  %7.0f conn/s\n", direct)
	fmt.Printf("  static nft DNAT    %7.0f conn/s   %6.0f us machine CPU per connection   (rounds: %s)\n",
		median(dnatRate), median(dnatCPU), fmtList(dnatCPU))
	fmt.Printf("  DNAT, %d queued     %7.0f conn/s   %6.0f us machine CPU per connection   (rounds: %s)\n",
		*floorPackets, median(floorRate), median(floorCPU), fmtList(floorCPU))
	fmt.Printf("  through falg (SNI) %7.0f conn/s   %6.0f us machine CPU per connection   (rounds: %s)\n",
		median(falgRate), median(falgCPU), fmtList(falgCPU))
	fmt.Printf("  ratio falg/DNAT %.2f conn/s; falg adds %.0f us of machine CPU per connection\n",
		median(falgRate)/median(dnatRate), median(falgCPU)-median(dnatCPU))
	floorDone = true
	accepted, err := stopFloor()
	if err != nil {
		return err
	}
	fmt.Printf("  queue floor: %.1f packets per connection through a reader that only accepts them add %.0f us;\n",
		float64(accepted)/float64(*conns**rounds), median(floorCPU)-median(dnatCPU))
	fmt.Printf("    the reader process spends %.0f us per connection (rounds: %s)\n", median(floorProc), fmtList(floorProc))
	fmt.Printf("  falg process CPU per connection: %.0f us (rounds: %s; user+system; includes the kernel's\n", cpu, fmtList(falgProc))
	fmt.Printf("    forwarding of the packets falg accepts or injects, and in this one-machine lab\n")
	fmt.Printf("    the receiving namespaces' processing of them)\n")
	if st, err := stats(admin); err == nil && st["flows"] > st0["flows"] {
		for k, v := range st0 {
			st[k] -= v
		}
		n := float64(st["flows"])
		fmt.Printf("  per connection: %.1f packets queued (%.1f accepted, %.1f dropped), %.1f of them after the hand-over\n",
			float64(st["queued"])/n, float64(st["accepted"])/n, float64(st["dropped"])/n, float64(st["unknown"]+st["late"])/n)
	}
	return nil
}

func copyLog(dir string) {
	if *keepLog != "" {
		b, _ := os.ReadFile(filepath.Join(dir, "falg.log"))
		os.WriteFile(*keepLog, b, 0o644)
	}
}

func iperf(ctx context.Context, client *lab.NS, addr string) (float64, error) {
	host, port, _ := net.SplitHostPort(addr)
	out, err := client.Command(ctx, "iperf3", "-c", host, "-p", port, "-t", strconv.Itoa(*seconds), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 -c %s: %v %s", addr, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, err
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

// rate opens conns TLS connections from client to addr, *parallel at a
// time, each with one request and answer, and returns connections per
// second and, with a falg pid, falg's CPU microseconds per connection.
func rate(ctx context.Context, client *lab.NS, addr string, pid int) (float64, float64, error) {
	cpu0 := cpuTime(pid)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, *parallel)
	per := *conns / *parallel
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for range per {
				c, err := client.Dial(ctx, "tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				tc := tls.Client(c, &tls.Config{ServerName: "a.example", InsecureSkipVerify: true})
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := tc.Write([]byte("ping\n")); err != nil {
					errs <- err
					c.Close()
					return
				}
				if _, err := io.ReadFull(tc, buf[:5]); err != nil {
					errs <- err
					c.Close()
					return
				}
				tc.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, fmt.Errorf("rate %s: %w", addr, err)
	}
	elapsed := time.Since(start)
	n := float64(per * *parallel)
	var cpu float64
	if pid != 0 {
		cpu = float64((cpuTime(pid) - cpu0).Microseconds()) / n
	}
	return n / elapsed.Seconds(), cpu, nil
}

// systemCPU is the machine's busy CPU time (all but idle and iowait),
// from /proc/stat.
func systemCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	var busy int64
	for i, v := range f {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is inside user
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100
}

// cpuTime is the user+system CPU time of process pid.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func serveTLS(ns *lab.NS, port int) (func(), error) {
	cert, err := lab.Certificate("a.example")
	if err != nil {
		return nil, err
	}
	ln, err := ns.Listen("tcp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		return nil, err
	}
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 5)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write([]byte("pong\n"))
				}
			}()
		}
	}()
	return func() { ln.Close() }, nil
}

// saveProfile writes a 3-second CPU profile of falg to -profile.
func saveProfile(admin string) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", admin)
	}}}
	resp, err := c.Get("http://falg/debug/pprof/profile?seconds=3")
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(*profile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	io.Copy(f, resp.Body)
	f.Close()
}

func stats(admin string) (map[string]int64, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", admin)
	}}}
	resp, err := c.Get("http://falg/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m map[string]int64
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

func waitSocket(path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		if x >= 100 {
			parts[i] = fmt.Sprintf("%.0f", x)
		} else {
			parts[i] = fmt.Sprintf("%5.1f", x)
		}
	}
	return strings.Join(parts, " ")
}
