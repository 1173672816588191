package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"falg/config"
	"falg/nfq"
	"falg/nft"
	"falg/relay"
)

func newRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Install the ruleset and route flows until SIGINT or SIGTERM, then remove every rule",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			c, err := g.load()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, c, g.config, log)
		},
	}
}

// unsupported refuses configurations that check accepts but this falg
// cannot serve yet, naming the field, rather than serving them wrongly.
func unsupported(c *config.Config) error {
	// Every dns and udp backend needs a mark value of its own (nft.UDPTargets).
	if _, err := nft.UDPTargets(c); err != nil {
		return config.Problems{{Path: "mark", Msg: err.Error()}}
	}
	return nil
}

// fixed refuses a reload that changes what only a restart can: the queues
// falg reads, the marks its rules and conntrack entries carry, its sockets
// and the pending sets' size.
func fixed(old, next *config.Config) error {
	var ps config.Problems
	for _, f := range []struct {
		name string
		same bool
	}{
		{"queue", old.Queue == next.Queue},
		{"workers", old.Workers == next.Workers},
		{"fail_open", old.FailOpen == next.FailOpen},
		{"mark", old.Mark == next.Mark},
		{"admin", old.Admin == next.Admin},
		{"metrics", old.Metrics == next.Metrics},
		{"max_pending", old.MaxPending == next.MaxPending},
		{"services (dataplane: relay)", reflect.DeepEqual(relay.Relayed(old), relay.Relayed(next))},
	} {
		if !f.same {
			ps = append(ps, config.Problem{Path: f.name, Msg: "changes only with a restart"})
		}
	}
	if len(ps) > 0 {
		return ps
	}
	return nil
}

// run is falg's main job: everything it sets up is torn down before it
// returns, whatever the reason.
func run(ctx context.Context, c *config.Config, path string, log *slog.Logger) error {
	if err := unsupported(c); err != nil {
		return err
	}
	if err := claimAdmin(c.Admin); err != nil {
		return err
	}
	stopRelay, relayStats, err := startRelay(c, log)
	if err != nil {
		return err
	}
	defer stopRelay()

	stats, es := &nfq.Stats{}, &nfq.EngineStats{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		m := map[string]int64{
			"queued":       int64(stats.Queued.Load()),
			"accepted":     int64(stats.Accepted.Load()),
			"dropped":      int64(stats.Dropped.Load()),
			"overruns":     int64(stats.Overruns.Load()),
			"errors":       int64(stats.Errors.Load()),
			"flows":        int64(es.Flows.Load()),
			"spliced":      int64(es.Spliced.Load()),
			"rejected":     int64(es.Rejected.Load()),
			"malformed":    int64(es.Malformed.Load()),
			"silent":       int64(es.Silent.Load()),
			"backend_fail": int64(es.BackendFail.Load()),
			"failed":       int64(es.Failed.Load()),
			"pending_full": int64(es.PendingFull.Load()),
			"limited":      int64(es.Limited.Load()),
			"unknown":      int64(es.Unknown.Load()),
			"late":         int64(es.Late.Load()),
			"undecodable":  int64(es.Undecodable.Load()),
			"handover_err": int64(es.HandoverErr.Load()),
			"pending":      es.Pending.Load(),
		}
		for k, v := range relayStats.Map() {
			m[k] = v
		}
		addUDPStats(m, es)
		serveJSON(w, m)
	})

	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	kind, err := nft.DetectQueue(nc)
	if err != nil {
		return err
	}
	rs := nft.New(c)
	if err := rs.Owner(nc); err != nil {
		return err
	}
	if err := rs.Install(nc, kind); err != nil {
		return err
	}
	log.Info("ruleset installed", "table", "inet "+nft.Table, "queue", kind.String())
	defer func() {
		if err := nft.Remove(nc); err != nil {
			log.Error("remove ruleset", "err", err)
			return
		}
		log.Info("ruleset removed", "table", "inet "+nft.Table)
	}()

	// Byte counts for falg flows; the setting is per network namespace.
	if err := os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_acct", []byte("1"), 0); err != nil {
		log.Warn("conntrack accounting not enabled: falg flows shows no byte counts", "err", err)
	}
	inj, err := nfq.NewInjector(c.InjectMark())
	if err != nil {
		return err
	}
	defer inj.Close()

	m := newMetrics(c, stats, es)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	if c.Metrics != "" {
		ln, err := net.Listen("tcp", c.Metrics)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		msrv := &http.Server{Handler: promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go msrv.Serve(ln)
		defer msrv.Close()
		log.Info("serving metrics", "addr", ln.Addr())
	}
	eng, err := nfq.NewEngine(nfq.EngineConfig{Config: c, Injector: inj, Log: log, Stats: es, Observer: m})
	if err != nil {
		return err
	}
	defer eng.Close()
	mux.HandleFunc("GET /records", func(w http.ResponseWriter, _ *http.Request) {
		serveJSON(w, eng.Records().All())
	})

	// Reloads, from SIGHUP or the admin socket, one at a time.
	var reloadMu sync.Mutex
	reload := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		next, err := config.Load(path)
		if err == nil {
			err = errors.Join(unsupported(next), fixed(c, next))
		}
		if err != nil {
			log.Error("reload refused: keeping the running configuration", "config", path, "err", err)
			return err
		}
		if err := nft.New(next).Update(nc, kind); err != nil {
			log.Error("reload: ruleset not updated: keeping the running configuration", "err", err)
			return err
		}
		if err := eng.Reload(next); err != nil {
			return err
		}
		c = next
		log.Info("reloaded", "config", path, "services", len(next.Services))
		return nil
	}
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := reload(); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintln(w, "reloaded")
	})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupDone := make(chan struct{})
	defer func() { <-hupDone }()
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload()
			}
		}
	}()
	var admin *adminServer
	defer func() { admin.Close() }()
	return nfq.Run(ctx, nfq.Config{
		First: c.Queue, Count: c.Workers, FailOpen: c.FailOpen,
		Handler: eng, Stats: stats, Log: log,
		Ready: func() {
			// Listening last makes an answer on the socket mean "ready".
			a, err := listenAdmin(c.Admin, mux, log)
			if err != nil {
				log.Error("admin socket: falg serves without it", "err", err)
			}
			admin = a
		},
	})
}

// addUDPStats adds the counters of DNS queries and udp relay flows to m.
func addUDPStats(m map[string]int64, es *nfq.EngineStats) {
	m["dns_queries"] = int64(es.DNSQueries.Load())
	m["dns_refused"] = int64(es.DNSRefused.Load())
	m["dns_formerr"] = int64(es.DNSFormErr.Load())
	m["dns_dropped"] = int64(es.DNSDropped.Load())
	m["udp_flows"] = int64(es.UDPFlows.Load())
	m["udp_no_backend"] = int64(es.UDPNoBackend.Load())
}
