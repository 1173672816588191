package config

import (
	"bytes"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// Defaults for keys the file leaves out.
const (
	DefaultMark       = 0x0ff00000
	DefaultAdmin      = "/run/falg/falg.sock"
	DefaultFirstData  = 10 * time.Second
	DefaultConnect    = 3 * time.Second
	DefaultMaxPending = 16384
)

// Load reads and validates the YAML file at path.
func Load(path string) (*Config, error) {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	return Parse(v.AllSettings())
}

// LoadBytes reads and validates a YAML document held in memory.
func LoadBytes(data []byte) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("config: read: %w", err)
	}
	return Parse(v.AllSettings())
}

// Parse validates a raw configuration tree (as YAML decodes it) and returns
// the typed Config, or Problems listing everything wrong with it.
func Parse(raw map[string]any) (*Config, error) {
	var ps Problems
	c := &Config{
		Workers:    runtime.NumCPU(),
		Mark:       DefaultMark,
		Admin:      DefaultAdmin,
		MaxPending: DefaultMaxPending,
	}
	top := object(&ps, "", raw, "queue", "workers", "fail_open", "mark", "admin", "metrics", "max_pending", "services")
	if v, ok := top["max_pending"]; ok {
		if n, ok := integer(&ps, "max_pending", v, 1, 1<<20); ok {
			c.MaxPending = int(n)
		}
	}
	if v, ok := top["queue"]; ok {
		if n, ok := integer(&ps, "queue", v, 0, math.MaxUint16); ok {
			c.Queue = uint16(n)
		}
	}
	if v, ok := top["workers"]; ok {
		if n, ok := integer(&ps, "workers", v, 1, 256); ok {
			c.Workers = int(n)
		}
	}
	if int(c.Queue)+c.Workers-1 > math.MaxUint16 {
		ps.add("workers", "queues %d..%d run past 65535", c.Queue, int(c.Queue)+c.Workers-1)
	}
	if v, ok := top["fail_open"]; ok {
		c.FailOpen, _ = boolean(&ps, "fail_open", v)
	}
	if v, ok := top["mark"]; ok {
		if n, ok := integer(&ps, "mark", v, 0, math.MaxUint32); ok {
			c.Mark = uint32(n)
			checkMark(&ps, c.Mark)
		}
	}
	if v, ok := top["admin"]; ok {
		if s, ok := str(&ps, "admin", v); ok {
			if s != "" && !filepath.IsAbs(s) {
				ps.add("admin", "%q is not an absolute path", s)
			}
			c.Admin = s
		}
	}
	if v, ok := top["metrics"]; ok {
		if s, ok := str(&ps, "metrics", v); ok {
			if s != "" {
				if _, port, err := net.SplitHostPort(s); err != nil {
					ps.add("metrics", "%q: %v", s, err)
				} else if _, err := parsePort(port); err != nil {
					ps.add("metrics", "%q: %v", s, err)
				}
			}
			c.Metrics = s
		}
	}
	list := listOf(&ps, "services", top["services"])
	if len(list) == 0 && top["services"] != nil || len(list) == 0 {
		if !hasProblemAt(ps, "services") {
			ps.add("services", "at least one service is required")
		}
	}
	names := map[string]string{}
	for i, v := range list {
		path := fmt.Sprintf("services[%d]", i)
		s := parseService(&ps, path, v)
		if s.Name != "" {
			if prev, dup := names[s.Name]; dup {
				ps.add(path+".name", "duplicate service name %q (also %s)", s.Name, prev)
			}
			names[s.Name] = path
		}
		c.Services = append(c.Services, s)
	}
	checkOverlaps(&ps, c.Services)
	if len(ps) > 0 {
		return nil, ps
	}
	return c, nil
}

// readUsers reads a users file: one "name:password" per line; blank lines
// and lines starting with # are skipped.
func readUsers(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	users := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, pass, ok := strings.Cut(line, ":")
		if !ok || name == "" || len(name) > 255 || len(pass) > 255 {
			return nil, fmt.Errorf("%s:%d: want name:password (each at most 255 bytes)", file, i+1)
		}
		users[name] = pass
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", file)
	}
	return users, nil
}

func checkMark(ps *Problems, m uint32) {
	switch {
	case bits.OnesCount32(m) < 2:
		ps.add("mark", "%#08x: falg needs at least two mark bits (inject and flow)", m)
	case m>>bits.TrailingZeros32(m)&(m>>bits.TrailingZeros32(m)+1) != 0:
		ps.add("mark", "%#08x: mark bits must be contiguous", m)
	}
}

var serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

func parseService(ps *Problems, path string, v any) Service {
	s := Service{
		Source:        SourceClient,
		ProxyProtocol: "off",
		Dataplane:     "splice",
		Timeouts:      Timeouts{FirstData: DefaultFirstData, Connect: DefaultConnect},
		Balance:       RoundRobin,
	}
	m := object(ps, path, v, "name", "listen", "protocol", "source", "proxy_protocol",
		"accept_proxy", "dataplane", "timeouts", "routes", "default", "balance", "users", "limits")
	if m == nil {
		return s
	}
	if name, ok := str(ps, path+".name", m["name"]); ok {
		if !serviceName.MatchString(name) {
			ps.add(path+".name", "%q: use letters, digits, '.', '_' or '-', at most 63", name)
		} else {
			s.Name = name
		}
	}
	if p, ok := enum(ps, path+".protocol", m["protocol"], protocols...); ok {
		s.Protocol = p
	}
	for i, lv := range listOf(ps, path+".listen", m["listen"]) {
		lp := fmt.Sprintf("%s.listen[%d]", path, i)
		if ls, ok := str(ps, lp, lv); ok {
			l, err := ParseListen(ls)
			if err != nil {
				ps.add(lp, "%v", err)
				continue
			}
			s.Listen = append(s.Listen, l)
		}
	}
	if len(s.Listen) == 0 && !hasProblemUnder(*ps, path+".listen") {
		ps.add(path+".listen", "at least one listen address is required")
	}
	if v, ok := m["source"]; ok {
		if src, ok := enum(ps, path+".source", v, SourceClient, SourceRouter); ok {
			s.Source = src
		}
	}
	if v, ok := m["proxy_protocol"]; ok {
		if b, isBool := v.(bool); isBool && !b {
			v = "off" // YAML 1.1 readers turn a bare off into false
		}
		if pp, ok := enum(ps, path+".proxy_protocol", v, "off", "v1", "v2"); ok {
			s.ProxyProtocol = pp
		}
	}
	for i, cv := range listOf(ps, path+".accept_proxy", m["accept_proxy"]) {
		cp := fmt.Sprintf("%s.accept_proxy[%d]", path, i)
		if cs, ok := str(ps, cp, cv); ok {
			p, err := parsePrefix(cs)
			if err != nil {
				ps.add(cp, "%v", err)
				continue
			}
			s.AcceptProxy = append(s.AcceptProxy, p)
		}
	}
	if v, ok := m["dataplane"]; ok {
		if d, ok := enum(ps, path+".dataplane", v, "splice", "relay"); ok {
			s.Dataplane = d
		}
	}
	if v, ok := m["timeouts"]; ok {
		tm := object(ps, path+".timeouts", v, "first_data", "connect")
		if d, ok := tm["first_data"]; ok {
			s.Timeouts.FirstData, _ = duration(ps, path+".timeouts.first_data", d)
		}
		if d, ok := tm["connect"]; ok {
			s.Timeouts.Connect, _ = duration(ps, path+".timeouts.connect", d)
		}
	}
	if v, ok := m["balance"]; ok {
		if b, ok := enum(ps, path+".balance", v, RoundRobin, SourceHash, Random); ok {
			s.Balance = b
		}
	}
	if v, ok := m["limits"]; ok {
		lm := object(ps, path+".limits", v, "max_pending", "client_rate", "client_burst")
		for key, dst := range map[string]*int{"max_pending": &s.Limits.MaxPending, "client_rate": &s.Limits.ClientRate, "client_burst": &s.Limits.ClientBurst} {
			if v, ok := lm[key]; ok {
				if n, ok := integer(ps, path+".limits."+key, v, 1, 1<<20); ok {
					*dst = int(n)
				}
			}
		}
		if s.Limits.ClientBurst > 0 && s.Limits.ClientRate == 0 {
			ps.add(path+".limits.client_burst", "needs client_rate")
		}
		if s.Limits.ClientRate > 0 && s.Limits.ClientBurst == 0 {
			s.Limits.ClientBurst = s.Limits.ClientRate
		}
	}
	if v, ok := m["users"]; ok {
		if file, ok := str(ps, path+".users", v); ok {
			users, err := readUsers(file)
			switch {
			case err != nil:
				ps.add(path+".users", "%v", err)
			case s.Protocol != "" && s.Protocol != Connect && s.Protocol != SOCKS5:
				ps.add(path+".users", "only connect and socks5 services authenticate users")
			default:
				s.Users = users
			}
		}
	}
	routes := listOf(ps, path+".routes", m["routes"])
	if len(routes) > 0 && s.Protocol != "" && !s.Protocol.Named() {
		ps.add(path+".routes", "protocol %s yields no name to route on: use default", s.Protocol)
	}
	seen := map[string]string{}
	for i, rv := range routes {
		rp := fmt.Sprintf("%s.routes[%d]", path, i)
		s.Routes = append(s.Routes, parseRoute(ps, rp, rv, s.Protocol, seen))
	}
	dv, hasDefault := m["default"]
	switch {
	case !hasDefault && len(routes) == 0:
		ps.add(path, "no routes and no default: every flow would be refused")
	case !hasDefault:
	case dv == "reject":
		if len(routes) == 0 {
			ps.add(path+".default", "reject with no routes refuses every flow")
		}
	default:
		if _, isStr := dv.(string); isStr {
			ps.add(path+".default", "want reject or a list of backends, got %q", dv)
			break
		}
		s.Default = parseBackends(ps, path+".default", dv, false)
	}
	return s
}

func parseRoute(ps *Problems, path string, v any, proto Protocol, seen map[string]string) Route {
	r := Route{Balance: RoundRobin}
	m := object(ps, path, v, "match", "backends", "balance")
	if m == nil {
		return r
	}
	for i, pv := range listOf(ps, path+".match", m["match"]) {
		mp := fmt.Sprintf("%s.match[%d]", path, i)
		pat, ok := str(ps, mp, pv)
		if !ok {
			continue
		}
		if err := checkPattern(pat); err != nil {
			ps.add(mp, "%v", err)
			continue
		}
		key := canonicalPattern(pat)
		if prev, dup := seen[key]; dup {
			ps.add(mp, "%q already matched at %s", pat, prev)
			continue
		}
		seen[key] = mp
		r.Match = append(r.Match, pat)
	}
	if len(r.Match) == 0 && !hasProblemUnder(*ps, path+".match") {
		ps.add(path+".match", "at least one pattern is required")
	}
	r.Backends = parseBackends(ps, path+".backends", m["backends"], proto == "" || proto.NamesDestination())
	if v, ok := m["balance"]; ok {
		if b, ok := enum(ps, path+".balance", v, RoundRobin, SourceHash, Random); ok {
			r.Balance = b
		}
	}
	return r
}

func parseBackends(ps *Problems, path string, v any, requestedOK bool) []Backend {
	var out []Backend
	list := listOf(ps, path, v)
	for i, bv := range list {
		bp := fmt.Sprintf("%s[%d]", path, i)
		bs, ok := str(ps, bp, bv)
		if !ok {
			continue
		}
		if bs == "requested" {
			if !requestedOK {
				ps.add(bp, "requested is only allowed in routes of connect, socks5 and instruction services")
				continue
			}
			out = append(out, Backend{Requested: true})
			continue
		}
		ap, err := ParseBackend(bs)
		if err != nil {
			ps.add(bp, "%v", err)
			continue
		}
		out = append(out, Backend{Addr: ap})
	}
	if len(list) == 0 && !hasProblemAt(*ps, path) {
		ps.add(path, "at least one backend is required")
	}
	return out
}

// ParseListen parses "addr:port", "[v6]:port" or "*:port".
func ParseListen(s string) (Listen, error) {
	if rest, ok := strings.CutPrefix(s, "*:"); ok {
		p, err := parsePort(rest)
		if err != nil {
			return Listen{}, fmt.Errorf("%q: %w", s, err)
		}
		return Listen{Port: p}, nil
	}
	ap, err := parseAddrPort(s)
	if err != nil {
		return Listen{}, err
	}
	return Listen{Addr: ap.Addr(), Port: ap.Port()}, nil
}

// ParseBackend parses a backend "addr:port" or "[v6]:port".
func ParseBackend(s string) (netip.AddrPort, error) {
	return parseAddrPort(s)
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want addr:port or [addr]:port", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	p, err := parsePort(port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
	}
	switch {
	case a.Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("%q: zoned addresses are not supported", s)
	case a.Is4In6():
		return netip.AddrPort{}, fmt.Errorf("%q: write the IPv4 address as %s", s, a.Unmap())
	case a.IsUnspecified(), a.IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("%q: %s is not a unicast address", s, a)
	}
	return netip.AddrPortFrom(a, p), nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not in 1-65535", s)
	}
	return uint16(n), nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or address", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

func checkOverlaps(ps *Problems, ss []Service) {
	type seen struct {
		l    Listen
		path string
	}
	var tcp, udp []seen
	for i, s := range ss {
		for j, l := range s.Listen {
			path := fmt.Sprintf("services[%d].listen[%d]", i, j)
			for _, tr := range []struct {
				on   bool
				list *[]seen
				name string
			}{{s.Protocol.TCP(), &tcp, "tcp"}, {s.Protocol.UDP(), &udp, "udp"}} {
				if !tr.on {
					continue
				}
				for _, o := range *tr.list {
					if o.l.Port == l.Port && (o.l.Any() || l.Any() || o.l.Addr == l.Addr) {
						ps.add(path, "%s %s overlaps %s (%s)", tr.name, l, o.path, o.l)
					}
				}
				*tr.list = append(*tr.list, seen{l, path})
			}
		}
	}
}

func hasProblemAt(ps Problems, path string) bool {
	for _, p := range ps {
		if p.Path == path {
			return true
		}
	}
	return false
}

func hasProblemUnder(ps Problems, path string) bool {
	for _, p := range ps {
		if p.Path == path || strings.HasPrefix(p.Path, path+"[") || strings.HasPrefix(p.Path, path+".") {
			return true
		}
	}
	return false
}

// object checks that v is a mapping whose keys are all in allowed, and
// returns it with lower-cased keys.
func object(ps *Problems, path string, v any, allowed ...string) map[string]any {
	raw, ok := v.(map[string]any)
	if !ok {
		ps.add(path, "want a mapping, got %s", kind(v))
		return nil
	}
	out := make(map[string]any, len(raw))
	for k, val := range raw {
		lk := strings.ToLower(k)
		kp := join(path, lk)
		if !contains(allowed, lk) {
			ps.add(kp, "unknown key")
			continue
		}
		if _, dup := out[lk]; dup {
			ps.add(kp, "key given twice (keys are case-insensitive)")
		}
		out[lk] = val
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func listOf(ps *Problems, path string, v any) []any {
	switch l := v.(type) {
	case nil:
		return nil
	case []any:
		return l
	default:
		ps.add(path, "want a list, got %s", kind(v))
		return nil
	}
}

func str(ps *Problems, path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		if v == nil {
			ps.add(path, "required")
		} else {
			ps.add(path, "want a string, got %s", kind(v))
		}
		return "", false
	}
	return s, true
}

func enum[T ~string](ps *Problems, path string, v any, allowed ...T) (T, bool) {
	s, ok := str(ps, path, v)
	if !ok {
		return "", false
	}
	for _, a := range allowed {
		if strings.EqualFold(s, string(a)) {
			return a, true
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	ps.add(path, "%q is not one of %s", s, strings.Join(names, ", "))
	return "", false
}

func integer(ps *Problems, path string, v any, lo, hi int64) (int64, bool) {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		if x > math.MaxInt64 {
			ps.add(path, "%d is out of range %d-%d", x, lo, hi)
			return 0, false
		}
		n = int64(x)
	case string:
		var err error
		n, err = strconv.ParseInt(x, 0, 64)
		if err != nil {
			ps.add(path, "%q is not an integer", x)
			return 0, false
		}
	default:
		ps.add(path, "want an integer, got %s", kind(v))
		return 0, false
	}
	if n < lo || n > hi {
		ps.add(path, "%d is out of range %d-%d", n, lo, hi)
		return 0, false
	}
	return n, true
}

func boolean(ps *Problems, path string, v any) (bool, bool) {
	b, ok := v.(bool)
	if !ok {
		ps.add(path, "want true or false, got %s", kind(v))
	}
	return b, ok
}

func duration(ps *Problems, path string, v any) (time.Duration, bool) {
	s, ok := v.(string)
	if !ok {
		ps.add(path, "want a duration such as 10s, got %s", kind(v))
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > time.Hour {
		ps.add(path, "%q is not a duration between 0 and 1h", s)
		return 0, false
	}
	return d, true
}

func kind(v any) string {
	switch x := v.(type) {
	case nil:
		return "nothing"
	case string:
		return fmt.Sprintf("string %q", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case int, int64, uint64, float64:
		return fmt.Sprintf("number %v", x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprintf("%T", v)
	}
}
