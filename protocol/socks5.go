package protocol

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrNotSOCKS5 reports a stream that is not SOCKS version 5.
var ErrNotSOCKS5 = errors.New("not SOCKS5")

// SOCKS5 reply codes (RFC 1928 6).
const (
	SOCKS5Succeeded           = 0x00
	SOCKS5GeneralFailure      = 0x01
	SOCKS5NotAllowed          = 0x02
	SOCKS5NetworkUnreachable  = 0x03
	SOCKS5HostUnreachable     = 0x04
	SOCKS5ConnectionRefused   = 0x05
	SOCKS5TTLExpired          = 0x06
	SOCKS5CommandNotSupported = 0x07
	SOCKS5AddressNotSupported = 0x08
)

const (
	socks5Version    = 5
	socks5NoAuth     = 0x00
	socks5UserPass   = 0x02
	socks5NoMethod   = 0xff
	socks5AuthVer    = 1
	socks5CmdConnect = 1
	socks5ATYPv4     = 1
	socks5ATYPDomain = 3
	socks5ATYPv6     = 4
)

// socks5Replies holds the static final replies, bound address 0.0.0.0:0.
var socks5Replies = func() (r [9][]byte) {
	for code := range r {
		r[code] = AppendSOCKS5Reply(nil, byte(code), netip.AddrPort{})
	}
	return r
}()

// AppendSOCKS5Reply appends a SOCKS5 reply (RFC 1928 6) with the given code
// and bound address; an invalid bound address is sent as 0.0.0.0:0.
func AppendSOCKS5Reply(b []byte, code byte, bound netip.AddrPort) []byte {
	a := bound.Addr().Unmap()
	switch {
	case a.Is4():
		b = append(b, socks5Version, code, 0, socks5ATYPv4)
		s := a.As4()
		b = append(b, s[:]...)
	case a.Is6():
		b = append(b, socks5Version, code, 0, socks5ATYPv6)
		s := a.As16()
		b = append(b, s[:]...)
	default:
		return append(b, socks5Version, code, 0, socks5ATYPv4, 0, 0, 0, 0, 0, 0)
	}
	return append(b, byte(bound.Port()>>8), byte(bound.Port()))
}

// socks5Parser reads an RFC 1928 greeting, an RFC 1929 username/password
// subnegotiation when users is set, and a CONNECT request. Interim replies
// (method selection, authentication status) are handed out once each in
// Decision.Reply, even though Feed sees the whole stream again each time.
type socks5Parser struct {
	users    map[string]string
	stage    int  // interim replies already handed out: 1 method, 2 auth
	answered bool // a Malformed decision carried the final reply
	out      [4 + 22]byte
	name     [nameBufLen]byte
}

// fail answers Malformed; with code >= 0 the reply (after the interim
// replies still due) ends the exchange.
func (p *socks5Parser) fail(out []byte, final []byte, err error) Decision {
	d := Decision{Verdict: Malformed, Err: err}
	if p.answered {
		return d
	}
	if final != nil {
		out = append(out, final...)
	}
	if len(out) > 0 {
		p.answered = true
		d.Reply = out
	}
	return d
}

func (p *socks5Parser) need(out []byte) Decision {
	d := Decision{Verdict: NeedMore}
	if len(out) > 0 {
		d.Reply = out
	}
	return d
}

func (p *socks5Parser) Feed(s []byte) Decision {
	out := p.out[:0]
	if len(s) == 0 {
		return Decision{Verdict: NeedMore}
	}
	if s[0] != socks5Version {
		return p.fail(out, nil, fmt.Errorf("protocol: socks5: version %d: %w", s[0], ErrNotSOCKS5))
	}
	if len(s) < 2 {
		return p.need(out)
	}
	nm := int(s[1])
	if nm == 0 {
		return p.fail(out, []byte{socks5Version, socks5NoMethod}, fmt.Errorf("protocol: socks5: greeting offers no method: %w", ErrSyntax))
	}
	if len(s) < 2+nm {
		return p.need(out)
	}
	want := byte(socks5NoAuth)
	if p.users != nil {
		want = socks5UserPass
	}
	offered := false
	for _, m := range s[2 : 2+nm] {
		if m == want {
			offered = true
		}
	}
	if !offered {
		return p.fail(out, []byte{socks5Version, socks5NoMethod}, fmt.Errorf("protocol: socks5: client does not offer method %d: %w", want, ErrAuth))
	}
	if p.stage < 1 {
		out = append(out, socks5Version, want)
		p.stage = 1
	}
	off := 2 + nm
	if p.users != nil {
		// RFC 1929: VER ULEN UNAME PLEN PASSWD.
		if len(s) < off+2 {
			return p.need(out)
		}
		if s[off] != socks5AuthVer {
			return p.fail(out, []byte{socks5AuthVer, 1}, fmt.Errorf("protocol: socks5: auth version %d: %w", s[off], ErrSyntax))
		}
		ul := int(s[off+1])
		if len(s) < off+2+ul+1 {
			return p.need(out)
		}
		pl := int(s[off+2+ul])
		end := off + 3 + ul + pl
		if len(s) < end {
			return p.need(out)
		}
		if ul == 0 || !checkPassword(p.users, s[off+2:off+2+ul], s[off+3+ul:end]) {
			return p.fail(out, []byte{socks5AuthVer, 1}, fmt.Errorf("protocol: socks5: %w", ErrAuth))
		}
		if p.stage < 2 {
			out = append(out, socks5AuthVer, 0)
			p.stage = 2
		}
		off = end
	}
	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
	if len(s) < off+5 {
		return p.need(out)
	}
	if s[off] != socks5Version || s[off+2] != 0 {
		return p.fail(out, socks5Replies[SOCKS5GeneralFailure], fmt.Errorf("protocol: socks5: request header %x: %w", s[off:off+3], ErrSyntax))
	}
	if cmd := s[off+1]; cmd != socks5CmdConnect {
		return p.fail(out, socks5Replies[SOCKS5CommandNotSupported], fmt.Errorf("protocol: socks5: command %d: %w", cmd, ErrUnsupported))
	}
	var end int
	name := p.name[:0]
	ok := true
	switch s[off+3] {
	case socks5ATYPv4:
		end = off + 4 + 4 + 2
		if len(s) < end {
			return p.need(out)
		}
		a := netip.AddrFrom4([4]byte(s[off+4 : off+8]))
		name = appendAddrPort(name, a, uint16(be16(s[end-2:])))
	case socks5ATYPv6:
		end = off + 4 + 16 + 2
		if len(s) < end {
			return p.need(out)
		}
		a := netip.AddrFrom16([16]byte(s[off+4 : off+20]))
		name = appendAddrPort(name, a, uint16(be16(s[end-2:])))
	case socks5ATYPDomain:
		dl := int(s[off+4])
		end = off + 5 + dl + 2
		if len(s) < end {
			return p.need(out)
		}
		host := s[off+5 : off+5+dl]
		if a, v6 := parseIPv6Literal(host); v6 {
			name = appendAddrPort(name, a, uint16(be16(s[end-2:])))
		} else if name, ok = appendHostName(name, host); ok {
			name = append(name, ':')
			name = appendUint16(name, uint16(be16(s[end-2:])))
		}
	default:
		return p.fail(out, socks5Replies[SOCKS5AddressNotSupported], fmt.Errorf("protocol: socks5: address type %d: %w", s[off+3], ErrUnsupported))
	}
	if !ok || be16(s[end-2:]) == 0 {
		return p.fail(out, socks5Replies[SOCKS5GeneralFailure], fmt.Errorf("protocol: socks5: destination %q: %w", s[off+4:end], ErrBadName))
	}
	d := Decision{Verdict: Decided, Name: string(name), Consume: end}
	if len(out) > 0 {
		d.Reply = out
	}
	return d
}

// Reply returns the final SOCKS5 reply with bound address 0.0.0.0:0: OK
// 0x00, NotAllowed 0x02, Refused 0x05, Unreachable and Timeout 0x04 (host
// unreachable; 0x06 "TTL expired" would mislead), BadRequest 0x01.
func (p *socks5Parser) Reply(o Outcome) []byte {
	if p.answered {
		return empty
	}
	switch o {
	case OK:
		return socks5Replies[SOCKS5Succeeded]
	case NotAllowed:
		return socks5Replies[SOCKS5NotAllowed]
	case Refused:
		return socks5Replies[SOCKS5ConnectionRefused]
	case Unreachable, Timeout:
		return socks5Replies[SOCKS5HostUnreachable]
	}
	return socks5Replies[SOCKS5GeneralFailure]
}

func (p *socks5Parser) Reset() { p.stage, p.answered = 0, false }
