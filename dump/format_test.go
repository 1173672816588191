package dump

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFormatDecider(t *testing.T) {
	fx := fixture(t)
	tests := []struct {
		name string
		dec  Decider
		hook string
		want string // suffix of the line after the decoded fields
	}{
		{"none", nil, "", "len=43 <TS val 102 ecr 200>\n"},
		{"name and decision", DeciderFunc(func(p *Packet, l *Line) {
			if len(l.Payload) > 0 && l.Payload[0] == 0x16 {
				l.Name, l.Decision = "a.example", "10.0.1.2:443"
			}
		}), "", "<TS val 102 ecr 200> | name=a.example decision=10.0.1.2:443\n"},
		{"quoted values", DeciderFunc(func(p *Packet, l *Line) {
			l.Name, l.Note = "CONNECT a.example:443", "a|b"
		}), "", `| name="CONNECT a.example:443" note="a|b"` + "\n"},
		{"non-printable", DeciderFunc(func(p *Packet, l *Line) { l.Decision = "x\ny" }), "", `| decision="x\ny"` + "\n"},
		{"hook", DeciderFunc(func(p *Packet, l *Line) { l.Decision = "reject" }), "prerouting",
			"<TS val 102 ecr 200> hook=prerouting | decision=reject\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			pr := Printer{W: &out, Decider: tt.dec}
			p := &Packet{Time: time.Date(2024, 1, 1, 21, 10, 27, 123456789, time.UTC), Data: fx[3].ip, Hook: tt.hook}
			if err := pr.Print(p); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if !strings.HasPrefix(got, "21:10:27.123456 TCP 10.0.0.2:40000 > 10.0.0.1:443 [P.] seq=1001") || !strings.HasSuffix(got, tt.want) {
				t.Errorf("got %q, want suffix %q", got, tt.want)
			}
		})
	}
}

// TestPrinterErrors checks that frames without IP and undecodable packets
// print ERR lines and never reach the Decider.
func TestPrinterErrors(t *testing.T) {
	var out bytes.Buffer
	called := 0
	pr := Printer{W: &out, Decider: DeciderFunc(func(*Packet, *Line) { called++ })}
	_ = pr.Print(&Packet{Err: errors.New("ethernet: ethertype 0x0806 is not IP")})
	_ = pr.Print(&Packet{Data: []byte{0x45, 0, 0}})
	want := "00:00:00.000000 ERR ethernet: ethertype 0x0806 is not IP\n" +
		"00:00:00.000000 ERR ipv4: header truncated: have 3 of 20 bytes\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if called != 0 {
		t.Errorf("Decider called %d times for undecodable packets", called)
	}
}

func TestFormatVerbose(t *testing.T) {
	fx := fixture(t)
	for _, tt := range []struct {
		data []byte
		want []string
	}{
		{fx[0].ip, []string{"    IPv4\t{", "    TCP\t{", "SrcPort=40000"}},
		{fx[9].ip, []string{"    IPv6\t{", "    UDP\t{", "    DNS\t{"}},
		{fx[11].ip, []string{"    IPv6\t{", "    IPv6HopByHop\t{", "    ICMPv6\t{"}},
	} {
		var l Line
		if err := Decode(tt.data, &l); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := l.Format(&out, true); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) < 3 || lines[0] != l.String() {
			t.Errorf("verbose output %q does not start with the line and add layers", out.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("verbose output lacks %q:\n%s", w, out.String())
			}
		}
	}
}

func TestTCPOptionString(t *testing.T) {
	for _, tt := range []struct {
		o    TCPOption
		want string
	}{
		{TCPOption{OptMSS, []byte{5, 0xb4}}, "mss 1460"},
		{TCPOption{OptMSS, []byte{5}}, "opt-2 05"},
		{TCPOption{OptWScale, []byte{14}}, "wscale 14"},
		{TCPOption{OptSACKPerm, nil}, "sackOK"},
		{TCPOption{OptSACK, []byte{0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4}}, "sack {1:2}{3:4}"},
		{TCPOption{OptSACK, []byte{0, 0, 0, 1}}, "opt-5 00000001"},
		{TCPOption{OptTimestamp, []byte{0, 0, 0, 1, 0, 0, 0, 2}}, "TS val 1 ecr 2"},
		{TCPOption{30, nil}, "opt-30"},
	} {
		if got := tt.o.String(); got != tt.want {
			t.Errorf("%v: got %q, want %q", tt.o, got, tt.want)
		}
	}
}
