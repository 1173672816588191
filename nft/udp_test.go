package nft

import (
	"strings"
	"testing"

	"falg/config"
)

const udpConfig = `
mark: 0x0ff00000
workers: 1
services:
  - name: dns
    listen: ["10.0.0.1:53", "[fd00::1]:53"]
    protocol: dns
    routes:
      - match: ["a.example."]
        backends: ["10.0.1.2:53", "[fd00:1::2]:53"]
      - match: ["b.example."]
        backends: ["10.0.1.3:53", "[fd00:1::3]:53"]
    default: reject
  - name: dns-snat
    listen: ["10.0.0.1:5353"]
    protocol: dns
    source: router
    routes:
      - match: ["a.example."]
        backends: ["10.0.1.2:53"]
    default: reject
  - name: echo
    listen: ["*:7"]
    protocol: udp
    balance: source-hash
    default: ["10.0.1.2:7", "10.0.1.3:7", "[fd00:1::2]:7"]
`

func udpExample(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.LoadBytes([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestUDPTargets(t *testing.T) {
	ts, err := UDPTargets(udpExample(t, udpConfig))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		backend string
		snat    bool
		zone    uint16
		mark    uint32
	}
	wants := []want{
		// The field starts above the inject, flow and relay bits: 0x00800000.
		{"10.0.1.2:53", false, 1, 0x00800000},
		{"[fd00:1::2]:53", false, 2, 0x00800000},
		{"10.0.1.3:53", false, 3, 0x01000000},
		{"[fd00:1::3]:53", false, 4, 0x01000000},
		{"10.0.1.2:53", true, 1, 0x01800000}, // same backend, same zone, own mark
		{"10.0.1.2:7", false, 0, 0x02000000},
		{"10.0.1.3:7", false, 0, 0x02800000},
		{"[fd00:1::2]:7", false, 0, 0x01800000},
	}
	if len(ts) != len(wants) {
		t.Fatalf("%d targets, want %d: %+v", len(ts), len(wants), ts)
	}
	for i, w := range wants {
		g := ts[i]
		if g.Backend.String() != w.backend || g.SNAT != w.snat || g.Zone != w.zone || g.Mark != w.mark {
			t.Errorf("target %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestUDPTargetsRefused(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"too few mark bits", `
mark: 0x00f00000
services:
  - name: echo
    listen: ["10.0.0.1:7"]
    protocol: udp
    default: ["10.0.1.2:7", "10.0.1.3:7"]
`, "numbers at most 1 UDP backends per family"},
		{"dns and udp share a backend", `
services:
  - name: dns
    listen: ["10.0.0.1:53"]
    protocol: dns
    default: ["10.0.1.2:53"]
  - name: echo
    listen: ["10.0.0.1:54"]
    protocol: udp
    default: ["10.0.1.2:53"]
`, "serves both a dns and a udp service"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := UDPTargets(udpExample(t, c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestUDPRulesetText(t *testing.T) {
	text := New(udpExample(t, udpConfig)).String()
	for _, want := range []string{
		"ip daddr 10.0.0.1 udp dport 53 counter queue num 0",
		"ip6 daddr fd00::1 udp dport 53 counter queue num 0",
		"type filter hook prerouting priority raw + 1; policy accept;",
		"meta nfproto ipv4 meta l4proto udp meta mark & 0x0f800000 == 0x00800000 counter ct zone set 1",
		"ip6 saddr fd00:1::3 udp sport 53 counter ct zone set 4",
		"meta nfproto ipv6 meta l4proto udp meta mark & 0x0f800000 == 0x01000000 counter dnat ip6 to [fd00:1::3]:53",
		"meta nfproto ipv4 meta l4proto udp meta mark & 0x0f800000 == 0x01800000 counter masquerade",
		"ct state new meta nfproto ipv4 udp dport 7 counter queue num 0",
		"ct state new meta nfproto ipv6 udp dport 7 counter queue num 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, text)
		}
	}
	// Relay listens are not queued before conntrack: only new flows are.
	if strings.Contains(text, "meta nfproto ipv4 udp dport 7 counter queue") && !strings.Contains(text, "ct state new meta nfproto ipv4 udp dport 7") {
		t.Errorf("relay packets queued at raw:\n%s", text)
	}
	if n := strings.Count(text, "udp dport 7 counter queue"); n != 2 {
		t.Errorf("%d relay queue rules, want 2:\n%s", n, text)
	}
	if n := strings.Count(text, "ct zone set 1\n"); n != 3 { // two marks (snat or not) and the answers
		t.Errorf("%d rules set zone 1, want 3:\n%s", n, text)
	}
}

func TestUDPInstallMatchesText(t *testing.T) {
	c, run := netns(t)
	kind, err := DetectQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	r := New(udpExample(t, udpConfig))
	if err := r.Install(c, kind); err != nil {
		t.Fatal(err)
	}
	listing := run("nft", "list", "table", "inet", Table)
	if got, want := r.Canonical(listing), r.Canonical(r.String()); got != want {
		t.Errorf("nft list differs from String:\n--- nft list (normalized)\n%s\n--- String\n%s", got, want)
	}
}
