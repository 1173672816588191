package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/google/nftables"
	"github.com/spf13/cobra"

	"falg/config"
	"falg/nfq"
	"falg/nft"
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
			return run(ctx, c, log)
		},
	}
}

func unsupported(c *config.Config) error {
	var ps config.Problems
	for i, s := range c.Services {
		if s.Dataplane == "relay" {
			ps = append(ps, config.Problem{Path: fmt.Sprintf("services[%d].dataplane", i), Msg: "relay is not implemented yet"})
		}
	}
	if len(ps) > 0 {
		return ps
	}
	return nil
}

// run is falg's main job: everything it sets up is torn down before it
// returns, whatever the reason.
func run(ctx context.Context, c *config.Config, log *slog.Logger) error {
	if err := unsupported(c); err != nil {
		return err
	}
	stats := &nfq.Stats{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		serveJSON(w, map[string]uint64{
			"queued":   stats.Queued.Load(),
			"accepted": stats.Accepted.Load(),
			"dropped":  stats.Dropped.Load(),
			"overruns": stats.Overruns.Load(),
			"errors":   stats.Errors.Load(),
		})
	})
	admin, err := listenAdmin(c.Admin, mux, log)
	if err != nil {
		return err
	}
	defer admin.Close()

	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	kind, err := nft.DetectQueue(nc)
	if err != nil {
		return err
	}
	rs := nft.New(c)
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

	inj, err := nfq.NewInjector(c.InjectMark())
	if err != nil {
		return err
	}
	defer inj.Close()

	// The handshake engine is not here yet: log and drop what is queued.
	h := nfq.HandlerFunc(func(q *nfq.Queue, p *nfq.Packet) {
		log.Debug("queued", "queue", p.Queue, "id", p.ID, "len", len(p.Data))
		q.Verdict(p.ID, nfq.Drop)
	})
	return nfq.Run(ctx, nfq.Config{
		First: c.Queue, Count: c.Workers, FailOpen: c.FailOpen,
		Handler: h, Stats: stats, Log: log,
	})
}
