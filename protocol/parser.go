package protocol

import (
	"errors"
	"fmt"
)

// MaxFirstBytes is the largest client stream prefix the engine buffers and a
// parser ever looks at. A parser that has not decided within this many bytes
// answers Malformed.
const MaxFirstBytes = 16 << 10

// DefaultMaxHeader is the header size limit of the http and connect parsers
// when Options.MaxHeader is 0.
const DefaultMaxHeader = 8 << 10

// Verdict says whether a parser has decided.
type Verdict uint8

const (
	// NeedMore asks the engine to feed more client bytes.
	NeedMore Verdict = iota
	// Decided means Decision.Name and Decision.Consume are final.
	Decided
	// Malformed means the stream cannot be routed; Decision.Err says why.
	Malformed
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case NeedMore:
		return "need-more"
	case Decided:
		return "decided"
	case Malformed:
		return "malformed"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Outcome is the result of the backend side, chosen by the engine after
// Decided, for which a parser builds the client's final reply.
type Outcome uint8

const (
	// OK means the backend connection is established.
	OK Outcome = iota
	// NotAllowed means no route admits the name.
	NotAllowed
	// Refused means the backend refused the connection (RST).
	Refused
	// Unreachable means the backend cannot be reached (ICMP, no route).
	Unreachable
	// Timeout means the backend did not answer in time.
	Timeout
	// BadRequest means the client's request was malformed.
	BadRequest
)

// String returns the outcome's name.
func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case NotAllowed:
		return "not-allowed"
	case Refused:
		return "refused"
	case Unreachable:
		return "unreachable"
	case Timeout:
		return "timeout"
	case BadRequest:
		return "bad-request"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Decision is what a parser answers after seeing the client's bytes so far.
//
// On Malformed with a non-nil Reply (an HTTP 407, a SOCKS5 "command not
// supported", a failed RFC 1929 authentication, ...) Reply is the complete
// final answer: the engine sends it and closes the connection with FIN. The
// parser's Reply(BadRequest) then returns an empty, non-nil slice, so an
// engine that also sends Reply(BadRequest) sends nothing twice.
type Decision struct {
	Verdict Verdict
	// Name is the routing key: the SNI (tls) or Host without port (http),
	// lowercase with a trailing dot stripped; "host:port" for connect,
	// socks5 and instruction (IPv6 as "[::1]:80"); the first question name
	// for dns; "" for none.
	Name string
	// ALPN is the first ALPN protocol the client offered (tls only).
	ALPN string
	// Consume is the number of bytes at the start of the client stream the
	// backend must not see (0 for tls, http, dns and none).
	Consume int
	// Reply holds bytes to send the client now, before the route is
	// decided (socks5 method selection and authentication status), or the
	// final answer of a Malformed decision. A parser hands out each reply
	// once. The slice belongs to the parser and is valid until the next
	// Feed or Reset; callers must not modify it.
	Reply []byte
	// Err says why the stream is Malformed.
	Err error
}

// Parser parses one connection's client stream.
//
// Feed is called with the whole client stream so far (a growing prefix of
// at most MaxFirstBytes bytes) each time new in-order bytes arrive. A Parser
// keeps small per-flow state (such as which interim replies it has already
// emitted), so one Parser serves one connection at a time; Reset makes it
// reusable.
type Parser interface {
	// Feed parses the client stream seen so far.
	Feed(stream []byte) Decision
	// Reply returns the bytes the client must get for the final outcome:
	// the CONNECT status line, the SOCKS5 reply, the instruction code; nil
	// for tls, http and none. For a non-OK outcome the engine sends it and
	// then FIN, or RST when it is nil. The slice is read-only.
	Reply(o Outcome) []byte
	// Reset clears the per-flow state.
	Reset()
}

// Options configures a parser.
type Options struct {
	// Users maps user names to passwords for connect (Proxy-Authorization:
	// Basic) and socks5 (RFC 1929). Nil means no authentication.
	Users map[string]string
	// MaxHeader caps the request header block of http and connect
	// (default DefaultMaxHeader, at most MaxFirstBytes).
	MaxHeader int
}

// New returns a parser for protocol: tls, http, connect, socks5,
// instruction, dns (DNS over TCP) or none.
func New(protocol string, opts Options) (Parser, error) {
	max := opts.MaxHeader
	if max <= 0 {
		max = DefaultMaxHeader
	}
	if max > MaxFirstBytes {
		max = MaxFirstBytes
	}
	switch protocol {
	case "tls":
		return &tlsParser{}, nil
	case "http":
		return &httpParser{max: max}, nil
	case "connect":
		return &connectParser{max: max, users: opts.Users}, nil
	case "socks5":
		return &socks5Parser{users: opts.Users}, nil
	case "instruction":
		return &instructionParser{}, nil
	case "dns":
		return &dnsTCPParser{}, nil
	case "none":
		return noneParser{}, nil
	}
	return nil, fmt.Errorf("protocol: unknown protocol %q", protocol)
}

// Errors shared by several parsers. Parsers wrap them with context; test with
// errors.Is.
var (
	// ErrTooLarge reports a first message beyond the parser's size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrBadName reports a host name or address that cannot be a routing key.
	ErrBadName = errors.New("bad host name")
	// ErrAuth reports missing or wrong credentials.
	ErrAuth = errors.New("authentication failed")
	// ErrUnsupported reports a valid request falg does not serve (SOCKS5
	// BIND or UDP ASSOCIATE, an unknown address type).
	ErrUnsupported = errors.New("unsupported request")
)

// noneParser decides at once without a name: the service's default route.
type noneParser struct{}

func (noneParser) Feed([]byte) Decision { return Decision{Verdict: Decided} }
func (noneParser) Reply(Outcome) []byte { return nil }
func (noneParser) Reset()               {}

// empty is the reply returned after a Malformed decision already carried the
// complete answer.
var empty = []byte{}
