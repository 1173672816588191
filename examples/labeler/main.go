// Command labeler is an example of the relay's interceptor API: it serves
// the `dataplane: relay` services of a falg configuration and appends a
// label to every chunk it copies, in both directions. A client that sends
// "hello" to an echo backend through it gets back "hello" + label + label:
// once on the way to the backend, once on the way back.
//
//	labeler -c falg.yaml -label '[falg]'
//
// With -label "" no flow is intercepted and the relay splices the bytes
// (splice(2)); the end-to-end tests use that to run the relay on its own.
// It prints "ready" on stdout once it listens, and on SIGINT or SIGTERM
// stops accepting, drains flows for -drain and removes every rule it
// installed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"falg/config"
	"falg/relay"
)

func main() {
	cfgPath := flag.String("c", "/etc/falg/falg.yaml", "falg configuration file")
	label := flag.String("label", "[falg]", "appended to every chunk; empty: no interceptor")
	idle := flag.Duration("idle", 0, "idle timeout of TCP flows (0: relay default)")
	drain := flag.Duration("drain", 2*time.Second, "how long a stop waits for flows to end")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "labeler: -log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	if err := run(*cfgPath, *label, *idle, *drain, log); err != nil {
		fmt.Fprintln(os.Stderr, "labeler:", err)
		os.Exit(1)
	}
}

func run(path, label string, idle, drain time.Duration, log *slog.Logger) error {
	c, err := config.Load(path)
	if err != nil {
		return err
	}
	o := relay.Options{Log: log, Mark: relay.MarkBit(c), Idle: idle, Drain: drain}
	if label != "" {
		o.Interceptor = Labeler([]byte(label))
	}
	s, err := relay.New(c, o)
	if err != nil {
		return err
	}
	if s.Empty() {
		return fmt.Errorf("%s has no service with dataplane: relay", path)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Start(); err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	err = s.Shutdown(context.Background())
	log.Info("labeler: stopped", "stats", s.Stats().Map())
	return err
}

// Labeler returns an interceptor that appends label to every chunk of
// every flow, both ways.
func Labeler(label []byte) relay.Interceptor {
	return relay.InterceptorFunc(func(*relay.Flow) relay.Hook {
		var out [2][]byte // one buffer per direction: Chunk runs concurrently for the two
		return relay.HookFunc(func(dir relay.Direction, chunk []byte) ([]byte, error) {
			out[dir] = append(append(out[dir][:0], chunk...), label...)
			return out[dir], nil
		})
	})
}
