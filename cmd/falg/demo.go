package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"falg/test/lab"
)

//go:embed demo.yaml
var demoConfig string

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Build a namespace lab, run falg on its embedded config, drive curl through it, tear down",
		Long: "demo builds a lab of network namespaces (a client, a router, four backends),\n" +
			"runs `falg run` in the router on this configuration:\n\n" + demoConfig +
			"\nsends real curl requests by name through it, prints which backend answered\n" +
			"each and falg's flow table, and removes everything it made. It needs root\n" +
			"and curl.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return demo(ctx, cmd.OutOrStdout())
		},
	}
}

// demoRequest is one curl the demo sends, and where it should land.
type demoRequest struct {
	what string
	args []string
	want string // backend index as text, or "reset"
}

var demoRequests = []demoRequest{
	{"https://a.example (SNI, exact)", []string{"-k", "--resolve", "a.example:443:10.0.0.1", "https://a.example/"}, "0"},
	{"https://www.a.example (SNI, wildcard)", []string{"-k", "--resolve", "www.a.example:443:10.0.0.1", "https://www.a.example/"}, "0"},
	{"https://api-7.b.example (SNI, regex)", []string{"-k", "--resolve", "api-7.b.example:443:10.0.0.1", "https://api-7.b.example/"}, "1"},
	{"https://a.example over IPv6", []string{"-k", "--resolve", "a.example:443:[fd00::1]", "https://a.example/"}, "0"},
	{"https://unknown.example (no route)", []string{"-k", "--resolve", "unknown.example:443:10.0.0.1", "https://unknown.example/"}, "reset"},
	{"http://a.example (Host)", []string{"--resolve", "a.example:80:10.0.0.1", "http://a.example/"}, "2"},
	{"http://x.b.example (Host, wildcard)", []string{"--resolve", "x.b.example:80:10.0.0.1", "http://x.b.example/"}, "3"},
	{"http://x.b.example over IPv6", []string{"--resolve", "x.b.example:80:[fd00::1]", "http://x.b.example/"}, "3"},
	{"http://unknown.example (no route)", []string{"--resolve", "unknown.example:80:10.0.0.1", "http://unknown.example/"}, "reset"},
}

func demo(ctx context.Context, w io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("curl"); err != nil {
		return errors.New("demo: needs curl (apt-get install curl)")
	}
	fmt.Fprintln(w, "building the lab: client, router, 4 backends (network namespaces)")
	l, err := lab.New(ctx, lab.Options{Clients: 1, Backends: 4, Prefix: "falg-demo"})
	if err != nil {
		return err
	}
	defer func() {
		l.Close()
		fmt.Fprintln(w, "lab removed")
	}()
	cert, err := lab.Certificate("a.example", "*.a.example", "*.b.example")
	if err != nil {
		return err
	}
	for i, b := range l.Backends {
		var ln net.Listener
		var err error
		if i < 2 {
			ln, err = b.Listen("tcp", "[::]:443")
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		} else {
			ln, err = b.Listen("tcp", "[::]:80")
		}
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: demoHandler(i, b.Name), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}

	dir, err := os.MkdirTemp("", "falg-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "falg.yaml")
	admin := filepath.Join(dir, "falg.sock")
	if err := os.WriteFile(cfg, []byte("admin: "+admin+"\n"+demoConfig), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "falg.log"))
	if err != nil {
		return err
	}
	run := l.Router.Command(ctx, self, "run", "-c", cfg)
	run.Stdout, run.Stderr = logf, logf
	if err := l.StartCmd(run); err != nil {
		return err
	}
	if err := waitSocket(ctx, admin); err != nil {
		return fmt.Errorf("demo: falg did not start: %w\n%s", err, readFile(logf.Name()))
	}
	fmt.Fprintf(w, "falg is running in the router with the embedded config (falg demo --help shows it)\n\n")

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tANSWERED BY\tBACKEND SAW\tOK")
	failures := 0
	for _, r := range demoRequests {
		args := append([]string{"-s", "-m", "5"}, r.args...)
		out, err := l.Clients[0].Command(ctx, "curl", args...).Output()
		by, saw := "connection reset (rejected)", "-"
		got := "reset"
		if err == nil {
			// body: "backend N (name) saw client ADDR asking for HOST"
			fields := strings.Fields(string(out))
			if len(fields) >= 6 {
				got, by, saw = fields[1], "backend "+fields[1]+" "+fields[2], fields[5]
			}
		}
		ok := "yes"
		if got != r.want {
			ok, failures = "NO (want "+r.want+")", failures+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.what, by, saw, ok)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nfalg flows (spliced pairs in the kernel's conntrack table):\n")
	flows, _ := l.Router.Command(ctx, self, "flows", "-c", cfg).CombinedOutput()
	w.Write(flows)

	run.Process.Signal(syscall.SIGTERM)
	if err := l.Wait(run); err != nil {
		return fmt.Errorf("demo: falg run: %w\n%s", err, readFile(logf.Name()))
	}
	fmt.Fprintf(w, "\nfalg's decisions:\n")
	for _, line := range strings.Split(readFile(logf.Name()), "\n") {
		if strings.Contains(line, "msg=flow") {
			fmt.Fprintln(w, " ", line)
		}
	}
	if failures > 0 {
		return fmt.Errorf("demo: %d requests went to the wrong place", failures)
	}
	fmt.Fprintln(w, "\nevery request went where the config says; falg removed its ruleset on exit")
	return nil
}

func demoHandler(i int, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend %d (%s) saw client %s asking for %s\n", i, name, r.RemoteAddr, r.Host)
	})
}

func waitSocket(ctx context.Context, path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
