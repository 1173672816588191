package protocol

import (
	"errors"
	"testing"
)

func TestInstruction(t *testing.T) {
	// The brief's example: "10.0.1.2:8080" is 13 bytes, 2+13+2 = 17, and
	// its bytes sum to 648, so CC = 48.
	if got := InstructionChecksum([]byte("10.0.1.2:8080")); got != 48 {
		t.Fatalf("checksum of the example = %d, want 48", got)
	}
	tests := []struct {
		name   string
		stream string
		want   Verdict
		host   string
		n      int
		err    error
	}{
		{"example", "1710.0.1.2:808048", Decided, "10.0.1.2:8080", 17, nil},
		{"pipelined", "1710.0.1.2:808048GET / HTTP/1.1", Decided, "10.0.1.2:8080", 17, nil},
		{"name", mkInstr("Svc.Example:443"), Decided, "svc.example:443", 19, nil},
		{"ipv6", mkInstr("[FD00::1]:80"), Decided, "[fd00::1]:80", 16, nil},
		{"shortest", mkInstr("a:1"), Decided, "a:1", 7, nil},
		{"partial", "1710.0.1.2:80", NeedMore, "", 0, nil},
		{"one digit", "1", NeedMore, "", 0, nil},
		{"empty", "", NeedMore, "", 0, nil},
		{"checksum", "1710.0.1.2:808047", Malformed, "", 0, ErrChecksum},
		{"checksum not digits", "1710.0.1.2:8080x8", Malformed, "", 0, ErrSyntax},
		{"not digits", "GET / HTTP/1.1", Malformed, "", 0, ErrSyntax},
		{"second not digit", "1x", Malformed, "", 0, ErrSyntax},
		{"length too small", "06a:100", Malformed, "", 0, ErrSyntax},
		{"bad byte early", "30ab cd", Malformed, "", 0, ErrBadName},
		{"no port", mkInstr("abc"), Malformed, "", 0, ErrBadName},
		{"port 0", mkInstr("a:0"), Malformed, "", 0, ErrBadName},
		{"bad host", mkInstr("a..b:1"), Malformed, "", 0, ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newP := mustNew("instruction", Options{})
			d := feedWhole(newP(), []byte(tt.stream)).d
			if d.Verdict != tt.want || d.Name != tt.host || d.Consume != tt.n {
				t.Fatalf("got %v %q %d (%v), want %v %q %d", d.Verdict, d.Name, d.Consume, d.Err, tt.want, tt.host, tt.n)
			}
			if tt.err != nil && !errors.Is(d.Err, tt.err) {
				t.Fatalf("error %v, want %v", d.Err, tt.err)
			}
			if err := checkConsistent("instruction", newP, []byte(tt.stream)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mkInstr(hp string) string {
	b, ok := AppendInstruction(nil, hp)
	if !ok {
		panic(hp)
	}
	return string(b)
}

func TestInstructionReplies(t *testing.T) {
	p := mustNew("instruction", Options{})()
	for o, want := range map[Outcome]string{OK: "00", NotAllowed: "01", Refused: "02", Unreachable: "02", Timeout: "02", BadRequest: "03"} {
		if r := string(p.Reply(o)); r != want {
			t.Errorf("Reply(%v) = %q, want %q", o, r, want)
		}
	}
	if _, ok := AppendInstruction(nil, string(make([]byte, 96))); ok {
		t.Error("AppendInstruction accepted 100 bytes")
	}
}

func TestNone(t *testing.T) {
	p := mustNew("none", Options{})()
	for _, s := range []string{"", "anything"} {
		if d := p.Feed([]byte(s)); d.Verdict != Decided || d.Name != "" || d.Consume != 0 {
			t.Fatalf("Feed(%q) = %+v", s, d)
		}
	}
	if p.Reply(OK) != nil || p.Reply(Refused) != nil {
		t.Fatal("none has a reply")
	}
	if _, err := New("gopher", Options{}); err == nil {
		t.Fatal("New accepted an unknown protocol")
	}
	for _, proto := range []string{"tls", "http", "connect", "socks5", "instruction", "dns", "none"} {
		if _, err := New(proto, Options{}); err != nil {
			t.Errorf("New(%q): %v", proto, err)
		}
	}
}
