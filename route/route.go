// Package route maps the name a parser found in a flow's first bytes to the
// backends that flow may go to.
//
// A Table is built from one service. Names compare case-insensitively and
// ignore a trailing dot. An exact pattern beats the longest matching
// "*.suffix" wildcard, which beats "~regex" patterns tried in file order; a
// name nothing matches takes the service's default, or is rejected. In a dns
// service an exact pattern names a zone: it matches the name itself and every
// name below it, and the longest zone wins.
package route

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"

	"falg/config"
)

// Table routes the names of one service.
type Table struct {
	exact   map[string]entry
	wild    map[string]entry // "*.a.example" is stored as "a.example"
	regexps []regexpRoute
	routes  []target
	def     target // Backends nil: reject
}

type entry struct {
	route   int
	pattern string
}

type regexpRoute struct {
	re      *regexp.Regexp
	route   int
	pattern string
}

type target struct {
	backends []config.Backend
	balance  config.Balance
	next     atomic.Uint32 // round-robin position
}

// Default is the Route index of a service's default backends.
const Default = -1

// Match is the result of a lookup.
type Match struct {
	// Route is the index of the matching route in the service, or Default.
	Route int
	// Pattern is the pattern that matched ("" for the default).
	Pattern string
	t       *target
}

// Backends are the matching route's backends, in file order.
func (m Match) Backends() []config.Backend { return m.t.backends }

// New builds the table of service s, whose patterns config has validated.
func New(s *config.Service) (*Table, error) {
	t := &Table{
		exact:  map[string]entry{},
		wild:   map[string]entry{},
		routes: make([]target, len(s.Routes)),
		def:    target{backends: s.Default, balance: s.Balance},
	}
	for i, r := range s.Routes {
		t.routes[i] = target{backends: r.Backends, balance: r.Balance}
		for _, p := range r.Match {
			switch {
			case strings.HasPrefix(p, "~"):
				re, err := regexp.Compile(p[1:])
				if err != nil {
					return nil, fmt.Errorf("route: service %s: %w", s.Name, err)
				}
				t.regexps = append(t.regexps, regexpRoute{re, i, p})
			case strings.HasPrefix(p, "*."):
				t.wild[normalize(p[2:])] = entry{i, p}
			default:
				t.exact[normalize(p)] = entry{i, p}
				if _, taken := t.wild[normalize(p)]; !taken && s.Protocol == config.DNS {
					t.wild[normalize(p)] = entry{i, p} // a zone covers the names below it
				}
			}
		}
	}
	return t, nil
}

// Lookup finds the route for name. ok is false when the name matches no
// route and the service rejects what it cannot route.
func (t *Table) Lookup(name string) (m Match, ok bool) {
	name = normalize(name)
	if e, hit := t.exact[name]; hit {
		return Match{Route: e.route, Pattern: e.pattern, t: &t.routes[e.route]}, true
	}
	for rest := name; ; {
		dot := strings.IndexByte(rest, '.')
		if dot < 0 {
			break
		}
		rest = rest[dot+1:]
		if e, hit := t.wild[rest]; hit {
			return Match{Route: e.route, Pattern: e.pattern, t: &t.routes[e.route]}, true
		}
	}
	for _, r := range t.regexps {
		if r.re.MatchString(name) {
			return Match{Route: r.route, Pattern: r.pattern, t: &t.routes[r.route]}, true
		}
	}
	if t.def.backends == nil {
		return Match{Route: Default}, false
	}
	return Match{Route: Default, t: &t.def}, true
}

// Order appends to dst the matched backends in the order to try them: the
// one the route's balance picks for client first, then the others in turn.
func (t *Table) Order(m Match, client netip.Addr, dst []config.Backend) []config.Backend {
	bs := m.t.backends
	if len(bs) == 0 {
		return dst
	}
	var first int
	switch m.t.balance {
	case config.SourceHash:
		first = int(hashAddr(client) % uint32(len(bs)))
	case config.Random:
		first = rand.IntN(len(bs))
	default:
		first = int((m.t.next.Add(1) - 1) % uint32(len(bs)))
	}
	for i := range bs {
		dst = append(dst, bs[(first+i)%len(bs)])
	}
	return dst
}

// hashAddr is FNV-1a over the 16-byte form of a: stable across restarts,
// so a client keeps its backend when falg is restarted.
func hashAddr(a netip.Addr) uint32 {
	b := a.As16()
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

// normalize lower-cases name and drops one trailing dot, without allocating
// when the name is already in that form.
func normalize(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}
