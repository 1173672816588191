package protocol

import (
	"errors"
	"fmt"
)

const (
	recordHeaderLen      = 5
	recordTypeHandshake  = 22
	maxRecordLen         = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length <= 2^14
	handshakeClientHello = 1
	extServerName        = 0
	extALPN              = 16
)

// ErrNotTLS reports a stream that does not start with a TLS handshake record
// carrying a ClientHello.
var ErrNotTLS = errors.New("not a TLS ClientHello")

// ErrSyntax reports a message whose lengths or fields are inconsistent.
var ErrSyntax = errors.New("syntax error")

// ClientHello holds what falg reads from a TLS ClientHello. Its byte slices
// alias the stream or the scratch buffer given to ParseClientHello.
type ClientHello struct {
	// Version is the legacy_version field (0x0303 for TLS 1.2 and 1.3).
	Version uint16
	// ServerName is the first host_name of the server_name extension, as
	// sent; nil when absent.
	ServerName []byte
	// ALPN is the first protocol of the ALPN extension; nil when absent.
	ALPN []byte
	// Length is the number of stream bytes up to the end of the record that
	// completes the ClientHello; it exceeds the stream's length while the
	// rest of that record has not arrived.
	Length int
}

// ParseClientHello parses the TLS ClientHello at the start of stream, which
// may span several TLS records (a handshake message fragmented across
// records) and must fit in MaxFirstBytes. A fragmented message is
// reassembled in scratch, which is grown (allocated) when its capacity is too
// small. It answers NeedMore for a valid prefix, Decided with ch filled, or
// Malformed with an error.
func ParseClientHello(stream, scratch []byte) (ch ClientHello, v Verdict, err error) {
	return parseClientHello(stream, &scratch)
}

func be16(b []byte) int { return int(b[0])<<8 | int(b[1]) }
func be24(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

func tlsErr(format string, args ...any) (ClientHello, Verdict, error) {
	return ClientHello{}, Malformed, fmt.Errorf("protocol: tls: "+format, args...)
}

func parseClientHello(stream []byte, scratch *[]byte) (ClientHello, Verdict, error) {
	var buf []byte // handshake bytes seen so far
	copied := false
	msgLen := -1 // 4 + handshake length, once known
	off := 0
	for off < len(stream) {
		if stream[off] != recordTypeHandshake {
			return tlsErr("record at offset %d has type %d: %w", off, stream[off], ErrNotTLS)
		}
		if len(stream)-off > 1 && stream[off+1] != 3 {
			return tlsErr("record at offset %d has version %#02x..: %w", off, stream[off+1], ErrNotTLS)
		}
		if len(stream)-off < recordHeaderLen {
			break
		}
		rlen := be16(stream[off+3:])
		if rlen == 0 || rlen > maxRecordLen {
			return tlsErr("record at offset %d has length %d: %w", off, rlen, ErrSyntax)
		}
		end := off + recordHeaderLen + rlen
		seg := stream[off+recordHeaderLen : min(end, len(stream))]
		before := len(buf) // handshake bytes in earlier records
		if off == 0 {
			buf = seg
		} else {
			if !copied {
				if cap(*scratch) < MaxFirstBytes {
					*scratch = make([]byte, 0, MaxFirstBytes)
				}
				buf = append((*scratch)[:0], buf...)
				copied = true
			}
			buf = append(buf, seg...)
		}
		if msgLen < 0 && len(buf) >= 4 {
			if buf[0] != handshakeClientHello {
				return tlsErr("handshake type %d: %w", buf[0], ErrNotTLS)
			}
			msgLen = 4 + be24(buf[1:])
			if msgLen+recordHeaderLen > MaxFirstBytes {
				return tlsErr("ClientHello of %d bytes: %w", msgLen, ErrTooLarge)
			}
		}
		if msgLen >= 0 && len(buf) >= msgLen {
			ch, err := parseClientHelloBody(buf[4:msgLen])
			if err != nil {
				return ClientHello{}, Malformed, err
			}
			ch.Length = end
			return ch, Decided, nil
		}
		// The rest of the message, all in this record, is the soonest it can
		// end; later records only add headers. The record's own end does not
		// matter: the message may end inside it, whatever follows.
		if msgLen >= 0 {
			if at := off + recordHeaderLen + msgLen - before; at > MaxFirstBytes {
				return tlsErr("ClientHello cannot end before offset %d: %w", at, ErrTooLarge)
			}
		}
		off = end
	}
	if len(stream) >= MaxFirstBytes {
		return tlsErr("no complete ClientHello in %d bytes: %w", len(stream), ErrTooLarge)
	}
	return ClientHello{}, NeedMore, nil
}

// parseClientHelloBody parses the ClientHello handshake body (RFC 8446 4.1.2).
func parseClientHelloBody(b []byte) (ClientHello, error) {
	var ch ClientHello
	if len(b) < 2+32+1 {
		return ch, fmt.Errorf("protocol: tls: ClientHello of %d bytes: %w", len(b), ErrSyntax)
	}
	ch.Version = uint16(be16(b))
	b = b[34:]
	sid := int(b[0])
	if sid > 32 || len(b) < 1+sid+2 {
		return ch, fmt.Errorf("protocol: tls: session id length %d: %w", sid, ErrSyntax)
	}
	b = b[1+sid:]
	cs := be16(b)
	if cs < 2 || cs%2 != 0 || len(b) < 2+cs+1 {
		return ch, fmt.Errorf("protocol: tls: cipher suites length %d: %w", cs, ErrSyntax)
	}
	b = b[2+cs:]
	cm := int(b[0])
	if cm < 1 || len(b) < 1+cm {
		return ch, fmt.Errorf("protocol: tls: compression methods length %d: %w", cm, ErrSyntax)
	}
	b = b[1+cm:]
	if len(b) == 0 {
		return ch, nil // no extensions
	}
	if len(b) < 2 || be16(b) != len(b)-2 {
		return ch, fmt.Errorf("protocol: tls: extensions length does not match the %d bytes left: %w", len(b), ErrSyntax)
	}
	b = b[2:]
	sawSNI, sawALPN := false, false
	for len(b) > 0 {
		if len(b) < 4 {
			return ch, fmt.Errorf("protocol: tls: truncated extension header: %w", ErrSyntax)
		}
		typ, n := be16(b), be16(b[2:])
		if len(b) < 4+n {
			return ch, fmt.Errorf("protocol: tls: extension %d of length %d overruns: %w", typ, n, ErrSyntax)
		}
		data := b[4 : 4+n]
		b = b[4+n:]
		switch typ {
		case extServerName:
			if sawSNI {
				return ch, fmt.Errorf("protocol: tls: duplicate server_name extension: %w", ErrSyntax)
			}
			sawSNI = true
			name, err := parseSNI(data)
			if err != nil {
				return ch, err
			}
			ch.ServerName = name
		case extALPN:
			if sawALPN {
				return ch, fmt.Errorf("protocol: tls: duplicate ALPN extension: %w", ErrSyntax)
			}
			sawALPN = true
			p, err := parseALPN(data)
			if err != nil {
				return ch, err
			}
			ch.ALPN = p
		}
	}
	return ch, nil
}

// parseSNI returns the first host_name of a server_name extension (RFC 6066 3).
func parseSNI(d []byte) ([]byte, error) {
	if len(d) < 2 || be16(d) != len(d)-2 || len(d) == 2 {
		return nil, fmt.Errorf("protocol: tls: server_name list length: %w", ErrSyntax)
	}
	d = d[2:]
	var name []byte
	for len(d) > 0 {
		if len(d) < 3 {
			return nil, fmt.Errorf("protocol: tls: truncated server_name entry: %w", ErrSyntax)
		}
		typ, n := d[0], be16(d[1:])
		if len(d) < 3+n {
			return nil, fmt.Errorf("protocol: tls: server_name entry of length %d overruns: %w", n, ErrSyntax)
		}
		if typ == 0 && name == nil {
			if n == 0 {
				return nil, fmt.Errorf("protocol: tls: empty host_name: %w", ErrSyntax)
			}
			name = d[3 : 3+n]
		}
		d = d[3+n:]
	}
	return name, nil
}

// parseALPN returns the first protocol of an ALPN extension (RFC 7301 3.1).
func parseALPN(d []byte) ([]byte, error) {
	if len(d) < 2 || be16(d) != len(d)-2 || len(d) == 2 {
		return nil, fmt.Errorf("protocol: tls: ALPN list length: %w", ErrSyntax)
	}
	d = d[2:]
	var first []byte
	for len(d) > 0 {
		n := int(d[0])
		if n == 0 || len(d) < 1+n {
			return nil, fmt.Errorf("protocol: tls: ALPN protocol of length %d: %w", n, ErrSyntax)
		}
		if first == nil {
			first = d[1 : 1+n]
		}
		d = d[1+n:]
	}
	return first, nil
}

// alpnString returns p as a string without allocating for common protocols.
func alpnString(p []byte) string {
	switch string(p) {
	case "":
		return ""
	case "h2":
		return "h2"
	case "http/1.1":
		return "http/1.1"
	case "http/1.0":
		return "http/1.0"
	case "h3":
		return "h3"
	case "acme-tls/1":
		return "acme-tls/1"
	case "dot":
		return "dot"
	}
	return string(p)
}

// tlsParser routes on the ClientHello's SNI. A ClientHello without SNI is
// Decided with Name "" (the service's default route).
type tlsParser struct {
	scratch []byte // reassembly buffer for fragmented ClientHellos
	name    [nameBufLen]byte
}

func (p *tlsParser) Feed(stream []byte) Decision {
	ch, v, err := parseClientHello(stream, &p.scratch)
	if v != Decided {
		return Decision{Verdict: v, Err: err}
	}
	d := Decision{Verdict: Decided, ALPN: alpnString(ch.ALPN)}
	if ch.ServerName != nil {
		name, ok := appendHostName(p.name[:0], ch.ServerName)
		if !ok {
			return Decision{Verdict: Malformed, Err: fmt.Errorf("protocol: tls: server name %q: %w", ch.ServerName, ErrBadName)}
		}
		d.Name = string(name)
	}
	return d
}

func (p *tlsParser) Reply(Outcome) []byte { return nil }

func (p *tlsParser) Reset() {
	if p.scratch != nil {
		p.scratch = p.scratch[:0]
	}
}
