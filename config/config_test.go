package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigPasses(t *testing.T) {
	c, err := Load("../configs/falg.yaml")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(c.Services) != 4 || c.Workers != 2 || c.Mark != 0x0ff00000 {
		t.Fatalf("example config decoded wrong: %+v", c)
	}
	web := c.Services[0]
	if web.Protocol != TLS || web.Source != SourceClient || web.Timeouts.FirstData != 10*time.Second {
		t.Errorf("web service: %+v", web)
	}
	want := Listen{Addr: netip.MustParseAddr("fd00::1"), Port: 443}
	if web.Listen[1] != want {
		t.Errorf("web listen[1] = %v, want %v", web.Listen[1], want)
	}
	if web.Default != nil {
		t.Errorf("web default = %v, want reject (nil)", web.Default)
	}
	if got := c.Services[1].Default; len(got) != 1 || got[0].Addr != netip.MustParseAddrPort("10.0.1.3:80") {
		t.Errorf("plain default = %v", got)
	}
	if !c.Services[2].Routes[0].Backends[0].Requested {
		t.Errorf("proxy route backend should be requested")
	}
	if c.InjectMark() != 0x00100000 || c.FlowMark() != 0x00200000 || c.RelayMark() != 0x00400000 || c.UDPMarkMask() != 0x0f800000 {
		t.Errorf("marks: inject %#x flow %#x relay %#x udp %#x", c.InjectMark(), c.FlowMark(), c.RelayMark(), c.UDPMarkMask())
	}
}

const base = `
services:
  - name: web
    listen: ["10.0.0.1:443"]
    protocol: tls
    routes:
      - match: ["a.example"]
        backends: ["10.0.1.2:443"]
`

func TestBaseIsValid(t *testing.T) {
	if _, err := LoadBytes([]byte(base)); err != nil {
		t.Fatal(err)
	}
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, path, msg string
	}{
		{"unknown top key", "colour: red\n" + base, "colour", "unknown key"},
		{"unknown service key", strings.Replace(base, "protocol: tls", "protocol: tls\n    prot: x", 1), "services[0].prot", "unknown key"},
		{"bad protocol", strings.Replace(base, "protocol: tls", "protocol: quic", 1), "services[0].protocol", `"quic" is not one of`},
		{"bad listen addr", strings.Replace(base, "10.0.0.1:443", "10.0.0.300:443", 1), "services[0].listen[0]", "not an IP address"},
		{"listen port 0", strings.Replace(base, "10.0.0.1:443", "10.0.0.1:0", 1), "services[0].listen[0]", "1-65535"},
		{"listen no port", strings.Replace(base, "10.0.0.1:443", "10.0.0.1", 1), "services[0].listen[0]", "want addr:port"},
		{"v6 without brackets", strings.Replace(base, "10.0.0.1:443", "fd00::1:443", 1), "services[0].listen[0]", "want addr:port"},
		{"bad backend", strings.Replace(base, "10.0.1.2:443", "backend:443", 1), "services[0].routes[0].backends[0]", "not an IP address"},
		{"unspecified backend", strings.Replace(base, "10.0.1.2:443", "0.0.0.0:443", 1), "services[0].routes[0].backends[0]", "not a unicast"},
		{"bad regex", strings.Replace(base, `"a.example"`, `"~a(b"`, 1), "services[0].routes[0].match[0]", "missing closing )"},
		{"bad wildcard", strings.Replace(base, `"a.example"`, `"a.*.example"`, 1), "services[0].routes[0].match[0]", "wildcard"},
		{"duplicate pattern", strings.Replace(base, `["a.example"]`, `["a.example", "A.example."]`, 1), "services[0].routes[0].match[1]", "already matched"},
		{"empty match", strings.Replace(base, `["a.example"]`, `[]`, 1), "services[0].routes[0].match", "at least one pattern"},
		{"no backends", strings.Replace(base, `backends: ["10.0.1.2:443"]`, `backends: []`, 1), "services[0].routes[0].backends", "at least one backend"},
		{"requested in tls", strings.Replace(base, `"10.0.1.2:443"`, `requested`, 1), "services[0].routes[0].backends[0]", "only allowed"},
		{"no routes no default", strings.Replace(base, "    routes:\n      - match: [\"a.example\"]\n        backends: [\"10.0.1.2:443\"]\n", "", 1), "services[0]", "no routes and no default"},
		{"duplicate name", base + "  - name: web\n    listen: [\"10.0.0.1:80\"]\n    protocol: none\n    default: [\"10.0.1.2:80\"]\n", "services[1].name", "duplicate service name"},
		{"overlapping listen", base + "  - name: two\n    listen: [\"*:443\"]\n    protocol: none\n    default: [\"10.0.1.2:80\"]\n", "services[1].listen[0]", "overlaps services[0].listen[0]"},
		{"dns overlaps udp", "services:\n  - name: d\n    listen: [\"10.0.0.1:53\"]\n    protocol: dns\n    default: [\"10.0.1.2:53\"]\n  - name: u\n    listen: [\"10.0.0.1:53\"]\n    protocol: udp\n    default: [\"10.0.1.3:53\"]\n", "services[1].listen[0]", "udp 10.0.0.1:53 overlaps"},
		{"routes for none", strings.Replace(base, "protocol: tls", "protocol: none", 1), "services[0].routes", "no name to route on"},
		{"mark one bit", "mark: 0x100\n" + base, "mark", "at least two mark bits"},
		{"mark not contiguous", "mark: 0x101\n" + base, "mark", "contiguous"},
		{"workers zero", "workers: 0\n" + base, "workers", "out of range"},
		{"max_pending zero", "max_pending: 0\n" + base, "max_pending", "out of range"},
		{"queue past end", "queue: 65535\nworkers: 2\n" + base, "workers", "past 65535"},
		{"bad duration", strings.Replace(base, "protocol: tls", "protocol: tls\n    timeouts: {first_data: soon}", 1), "services[0].timeouts.first_data", "not a duration"},
		{"bad source", strings.Replace(base, "protocol: tls", "protocol: tls\n    source: nat", 1), "services[0].source", "not one of"},
		{"bad accept_proxy", strings.Replace(base, "protocol: tls", "protocol: tls\n    accept_proxy: [\"10.0.0.1/8\"]", 1), "services[0].accept_proxy[0]", "host bits"},
		{"bad balance", strings.Replace(base, `backends: ["10.0.1.2:443"]`, "backends: [\"10.0.1.2:443\"]\n        balance: leastconn", 1), "services[0].routes[0].balance", "not one of"},
		{"default string", base + "    default: drop\n", "services[0].default", "want reject or a list"},
		{"no services", "queue: 1\n", "services", "at least one service"},
		{"relative admin", "admin: falg.sock\n" + base, "admin", "absolute path"},
		{"bad metrics", "metrics: localhost\n" + base, "metrics", "missing port"},
		{"service not a mapping", "services: [web]\n", "services[0]", "want a mapping"},
		{"users file missing", strings.Replace(base, "protocol: tls", "protocol: connect\n    users: /nonexistent/users", 1), "services[0].users", "no such file"},
		{"users on tls", strings.Replace(base, "protocol: tls", "protocol: tls\n    users: testdata/users", 1), "services[0].users", "only connect and socks5"},
		{"users bad line", strings.Replace(base, "protocol: tls", "protocol: socks5\n    users: testdata/users-bad", 1), "services[0].users", "users-bad:2: want name:password"},
		{"limits unknown key", strings.Replace(base, "protocol: tls", "protocol: tls\n    limits: {rate: 5}", 1), "services[0].limits.rate", "unknown key"},
		{"limits burst alone", strings.Replace(base, "protocol: tls", "protocol: tls\n    limits: {client_burst: 5}", 1), "services[0].limits.client_burst", "needs client_rate"},
		{"missing protocol", strings.Replace(base, "    protocol: tls\n", "", 1), "services[0].protocol", "required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadBytes([]byte(tc.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want Problems, got %v", err)
			}
			for _, p := range ps {
				if p.Path == tc.path && strings.Contains(p.Msg, tc.msg) {
					return
				}
			}
			t.Fatalf("want a problem at %s containing %q, got:\n%v", tc.path, tc.msg, err)
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	y := strings.Replace(base, "10.0.0.1:443", "nope", 1)
	y = strings.Replace(y, "10.0.1.2:443", "nope", 1)
	_, err := LoadBytes([]byte("workers: -1\n" + y))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) < 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
}

func TestKeysCaseInsensitive(t *testing.T) {
	y := strings.Replace(base, "protocol: tls", "Protocol: TLS", 1)
	c, err := LoadBytes([]byte("Workers: 3\n" + y))
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 3 || c.Services[0].Protocol != TLS {
		t.Fatalf("got workers %d protocol %q", c.Workers, c.Services[0].Protocol)
	}
}

func TestUsersFile(t *testing.T) {
	y := strings.Replace(base, "protocol: tls", "protocol: socks5\n    users: testdata/users", 1)
	y = strings.Replace(y, `"a.example"`, `"a.example:443"`, 1)
	c, err := LoadBytes([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Services[0].Users; len(u) != 2 || u["bob"] != "builder" {
		t.Fatalf("users = %v", u)
	}
}
