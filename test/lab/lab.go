package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
)

// ErrUnavailable reports that this environment cannot build a lab: not root,
// no `ip` binary, or network namespaces cannot be created.
var ErrUnavailable = errors.New("lab: network namespaces unavailable")

// Options shape a lab. The zero value gives one client and two backends.
type Options struct {
	Clients  int    // number of clients, default 1, at most 200
	Backends int    // number of backends, default 2, at most 200
	Prefix   string // namespace name prefix, default "falg"
}

// Lab is a running set of namespaces: a router between clients and backends.
// Close removes it.
type Lab struct {
	Router   *NS
	Clients  []*NS
	Backends []*NS

	id   string // <prefix>-<8 hex>, the common start of every namespace name
	ip   string // path of the ip binary
	mark string // marker file path

	mu     sync.Mutex
	procs  []*proc
	closed bool
	err    error // result of the first Close
}

// NS is one namespace of a lab.
type NS struct {
	// Name is the namespace name, as `ip netns list` shows it.
	Name string
	// Addr4 and Addr6 are this host's addresses on its segment. For the
	// router they are its client-side addresses.
	Addr4, Addr6 netip.Addr
	// Gateway4 and Gateway6 are the router's addresses on this host's
	// segment, the host's default gateways. Zero for the router.
	Gateway4, Gateway6 netip.Addr
	// ClientSide4/6 and BackendSide4/6 are the router's addresses on the
	// client and backend segments. Zero except on the router.
	ClientSide4, ClientSide6   netip.Addr
	BackendSide4, BackendSide6 netip.Addr

	lab    *Lab
	port   string // router-side veth of a client or backend
	bridge string // router bridge the port joins
}

// Namespaces returns every namespace of the lab: router, clients, backends.
func (l *Lab) Namespaces() []*NS {
	all := []*NS{l.Router}
	all = append(all, l.Clients...)
	return append(all, l.Backends...)
}

// ID returns the part every namespace name of the lab starts with,
// <prefix>-<8 hex>.
func (l *Lab) ID() string { return l.id }

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// New builds a lab and returns when every client reaches every backend and
// back over IPv4 and IPv6, or when ctx ends. On error it removes what it made.
func New(ctx context.Context, o Options) (l *Lab, err error) {
	if o.Clients == 0 {
		o.Clients = 1
	}
	if o.Backends == 0 {
		o.Backends = 2
	}
	if o.Prefix == "" {
		o.Prefix = "falg"
	}
	if o.Clients < 0 || o.Clients > maxHosts || o.Backends < 0 || o.Backends > maxHosts {
		return nil, fmt.Errorf("lab: clients and backends must be 1..%d, got %d and %d", maxHosts, o.Clients, o.Backends)
	}
	if !prefixRE.MatchString(o.Prefix) {
		return nil, fmt.Errorf("lab: prefix %q: want 1-32 of [A-Za-z0-9_.-]", o.Prefix)
	}
	ip, err := ipPath()
	if err != nil {
		return nil, err
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("lab: id: %w", err)
	}
	l = &Lab{id: o.Prefix + "-" + hex.EncodeToString(rnd[:]), ip: ip}
	l.Router, l.Clients, l.Backends = plan(l.id, o.Clients, o.Backends)
	for _, n := range l.Namespaces() {
		n.lab = l
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
			l = nil
		}
	}()
	if l.mark, err = writeMarker(l.id); err != nil {
		return l, err
	}
	if err := l.build(ctx); err != nil {
		return l, err
	}
	if err := l.waitReady(ctx); err != nil {
		return l, err
	}
	return l, nil
}

// Close kills the processes the lab started and every process left inside
// its namespaces, then deletes the namespaces (which removes their links)
// and the marker file. It is safe to call more than once and from several
// goroutines; later calls return the first call's result.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.err
	}
	l.closed = true
	var errs []error
	errs = append(errs, l.stopProcs())
	names := make([]string, 0, len(l.Namespaces()))
	for _, n := range l.Namespaces() {
		names = append(names, n.Name)
	}
	// Kill, delete, and kill again: a process entering a namespace while
	// the first sweep ran is caught by the second, which finds it by the
	// namespace's identity after the name is gone.
	ids := nsIDs(names)
	errs = append(errs, killInside(ids))
	errs = append(errs, deleteNamespaces(l.ip, names))
	errs = append(errs, killInside(ids))
	if l.mark != "" {
		errs = append(errs, removeMarker(l.mark))
	}
	l.err = errors.Join(errs...)
	if l.err != nil {
		l.err = fmt.Errorf("lab: close %s: %w", l.id, l.err)
	}
	return l.err
}
