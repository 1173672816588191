package main

import (
	"context"
	"fmt"
	"log/slog"

	"falg/config"
	"falg/relay"
)

// startRelay starts the relay data plane for the services of c with
// `dataplane: relay`: it binds their listens, installs the TPROXY table
// (inet falg_relay) and ip rules when a service is transparent or uses
// source: client, and serves. stop stops accepting, drains open flows for
// relay.DefaultDrain, closes the rest and removes what was installed. With
// no relay service it does nothing and stop is a no-op. The relay's mark is
// the third-lowest bit of c.Mark (relay.MarkBit).
func startRelay(c *config.Config, log *slog.Logger) (stop func(), stats *relay.Stats, err error) {
	stats = &relay.Stats{}
	if len(relay.Relayed(c)) == 0 {
		return func() {}, stats, nil
	}
	s, err := relay.New(c, relay.Options{Log: log, Stats: stats, Mark: relay.MarkBit(c)})
	if err != nil {
		return nil, nil, err
	}
	if err := s.Start(); err != nil {
		return nil, nil, fmt.Errorf("relay: start: %w", err)
	}
	return func() {
		if err := s.Shutdown(context.Background()); err != nil {
			log.Error("relay: shutdown", "err", err)
		}
	}, stats, nil
}
