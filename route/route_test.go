package route

import (
	"net/netip"
	"testing"

	"falg/config"
)

func mustTable(t *testing.T, yaml string) *Table {
	t.Helper()
	c, err := config.LoadBytes([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := New(&c.Services[0])
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

const tlsService = `
services:
  - name: web
    listen: ["10.0.0.1:443"]
    protocol: tls
    routes:
      - match: ["a.example", "*.a.example"]
        backends: ["10.0.1.2:443"]
      - match: ["*.b.a.example"]
        backends: ["10.0.1.3:443"]
      - match: ["~^api-[0-9]+\\.c\\.example$", "~^.*\\.example$"]
        backends: ["10.0.1.4:443"]
      - match: ["x.b.a.example"]
        backends: ["10.0.1.5:443"]
    default: reject
`

func TestLookup(t *testing.T) {
	tb := mustTable(t, tlsService)
	for _, tc := range []struct {
		name    string
		route   int
		pattern string
		ok      bool
	}{
		{"a.example", 0, "a.example", true},
		{"A.Example.", 0, "a.example", true},
		{"www.a.example", 0, "*.a.example", true},
		{"y.b.a.example", 1, "*.b.a.example", true}, // longest wildcard wins
		{"x.b.a.example", 3, "x.b.a.example", true}, // exact beats wildcard
		{"b.a.example", 0, "*.a.example", true},     // *.b.a.example needs a label before b
		{"api-12.c.example", 2, `~^api-[0-9]+\.c\.example$`, true},
		{"other.example", 2, `~^.*\.example$`, true}, // regexes in file order
		{"example", Default, "", false},
		{"", Default, "", false},
		{"a.example.org", Default, "", false},
	} {
		m, ok := tb.Lookup(tc.name)
		if ok != tc.ok || m.Route != tc.route || m.Pattern != tc.pattern {
			t.Errorf("Lookup(%q) = route %d pattern %q ok %v, want %d %q %v", tc.name, m.Route, m.Pattern, ok, tc.route, tc.pattern, tc.ok)
		}
	}
}

func TestDNSZones(t *testing.T) {
	tb := mustTable(t, `
services:
  - name: dns
    listen: ["10.0.0.1:53"]
    protocol: dns
    routes:
      - match: ["example."]
        backends: ["10.0.1.2:53"]
      - match: ["b.example."]
        backends: ["10.0.1.3:53"]
    default: ["10.0.1.9:53"]
`)
	for name, want := range map[string]int{
		"example": 0, "x.example.": 0, "b.example": 1, "deep.x.b.example.": 1, "ab.example": 0, "org.": Default,
	} {
		m, ok := tb.Lookup(name)
		if !ok || m.Route != want {
			t.Errorf("Lookup(%q) = %d, %v; want %d", name, m.Route, ok, want)
		}
	}
}

func TestOrder(t *testing.T) {
	tb := mustTable(t, `
services:
  - name: web
    listen: ["10.0.0.1:443"]
    protocol: tls
    routes:
      - match: ["rr"]
        backends: ["10.0.1.2:1", "10.0.1.3:1", "10.0.1.4:1"]
      - match: ["sh"]
        backends: ["10.0.1.2:1", "10.0.1.3:1", "10.0.1.4:1"]
        balance: source-hash
      - match: ["rnd"]
        backends: ["10.0.1.2:1", "10.0.1.3:1"]
        balance: random
`)
	client := netip.MustParseAddr("10.0.0.2")
	m, _ := tb.Lookup("rr")
	firsts := map[string]int{}
	for range 6 {
		o := tb.Order(m, client, nil)
		if len(o) != 3 {
			t.Fatalf("order has %d backends", len(o))
		}
		// Every backend exactly once, the rest in turn after the first.
		for i := range o {
			if o[i] != m.Backends()[(indexOf(m.Backends(), o[0])+i)%3] {
				t.Fatalf("order %v is not a rotation", o)
			}
		}
		firsts[o[0].String()]++
	}
	if len(firsts) != 3 || firsts["10.0.1.2:1"] != 2 {
		t.Errorf("round robin firsts = %v, want each backend twice", firsts)
	}
	m, _ = tb.Lookup("sh")
	a := tb.Order(m, client, nil)[0]
	for range 5 {
		if b := tb.Order(m, client, nil)[0]; b != a {
			t.Fatalf("source-hash moved client from %v to %v", a, b)
		}
	}
	seen := map[config.Backend]bool{}
	for i := range 64 {
		seen[tb.Order(m, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), nil)[0]] = true
	}
	if len(seen) != 3 {
		t.Errorf("source-hash used %d of 3 backends over 64 clients", len(seen))
	}
	m, _ = tb.Lookup("rnd")
	if o := tb.Order(m, client, nil); len(o) != 2 || o[0] == o[1] {
		t.Errorf("random order %v", o)
	}
}

func indexOf(bs []config.Backend, b config.Backend) int {
	for i, x := range bs {
		if x == b {
			return i
		}
	}
	return -1
}

func BenchmarkLookup(b *testing.B) {
	c, err := config.LoadBytes([]byte(tlsService))
	if err != nil {
		b.Fatal(err)
	}
	tb, _ := New(&c.Services[0])
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tb.Lookup("y.b.a.example"); !ok {
			b.Fatal("no match")
		}
	}
}
