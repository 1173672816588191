package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// adminServer answers on falg's admin socket: GET /stats returns the
// counters as JSON. Other commands (falg flows) are its clients.
type adminServer struct {
	ln  net.Listener
	srv *http.Server
}

// claimAdmin checks the admin socket at path before falg touches the
// kernel. A socket that answers belongs to a running falg, and falg refuses
// to start beside it; one that does not was left by a killed falg.
func claimAdmin(path string) error {
	if path == "" {
		return nil
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("admin: %s answers: another falg is running", path)
	}
	return nil
}

// listenAdmin serves the admin socket at path, replacing a stale one. falg
// listens once it is ready, so an answer means the ruleset is in place.
func listenAdmin(path string, mux *http.ServeMux, log *slog.Logger) (*adminServer, error) {
	if path == "" {
		return nil, nil
	}
	os.Remove(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	os.Chmod(path, 0o600)
	a := &adminServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin: serve", "err", err)
		}
	}()
	return a, nil
}

// Close stops the server and removes the socket.
func (a *adminServer) Close() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.srv.Shutdown(ctx) // closes the listener, which unlinks the socket
}

func serveJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// adminClient talks HTTP to the admin socket at path.
func adminClient(path string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}
}
