package protocol

import (
	"errors"
	"fmt"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsHeaderLen is the length of the fixed DNS header.
const dnsHeaderLen = 12

// ErrNotQuery reports a DNS message that is a response or not a standard
// query (opcode other than QUERY).
var ErrNotQuery = errors.New("not a DNS query")

// DNSQuery is what falg reads from a DNS query.
type DNSQuery struct {
	// ID is the message ID.
	ID uint16
	// OpCode is the header's opcode (0 for QUERY).
	OpCode dnsmessage.OpCode
	// RecursionDesired is the RD bit.
	RecursionDesired bool
	// Name is the first question's name: lowercase, without the trailing
	// dot ("" for the root). It is written into the nameBuf given to
	// ParseDNSQuery.
	Name []byte
	// Type and Class are the first question's QTYPE and QCLASS.
	Type  dnsmessage.Type
	Class dnsmessage.Class
}

// ParseDNSQuery parses the header and first question of the DNS query pkt.
// The name is appended to nameBuf[:0]; with a capacity of 255 bytes or more
// nothing is allocated. On error q still carries the header fields when pkt
// holds a full header, so the caller can answer with AppendDNSError.
func ParseDNSQuery(pkt, nameBuf []byte) (q DNSQuery, err error) {
	if len(pkt) < dnsHeaderLen {
		return q, fmt.Errorf("protocol: dns: message of %d bytes: %w", len(pkt), ErrSyntax)
	}
	var p dnsmessage.Parser
	h, err := p.Start(pkt)
	if err != nil {
		return q, fmt.Errorf("protocol: dns: %w: %w", ErrSyntax, err)
	}
	q.ID, q.OpCode, q.RecursionDesired = h.ID, h.OpCode, h.RecursionDesired
	if h.Response || h.OpCode != 0 {
		return q, fmt.Errorf("protocol: dns: response bit %t, opcode %d: %w", h.Response, h.OpCode, ErrNotQuery)
	}
	qs, err := p.Question()
	if err != nil {
		return q, fmt.Errorf("protocol: dns: question: %w: %w", ErrSyntax, err)
	}
	q.Type, q.Class = qs.Type, qs.Class
	name := qs.Name.Data[:qs.Name.Length]
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	out := nameBuf[:0]
	for _, c := range name {
		if c < 0x21 || c > 0x7e {
			return q, fmt.Errorf("protocol: dns: byte %#02x in name: %w", c, ErrBadName)
		}
		out = append(out, lower(c))
	}
	q.Name = out
	return q, nil
}

// AppendDNSError appends to dst a response to query with the given rcode
// (such as dnsmessage.RCodeFormatError or dnsmessage.RCodeRefused) that
// echoes the query's ID, opcode, RD bit and first question. A query whose
// question cannot be parsed is answered without a question. It fails when
// query has no full 12-byte header or is itself a response.
func AppendDNSError(dst, query []byte, rcode dnsmessage.RCode) ([]byte, error) {
	if len(query) < dnsHeaderLen {
		return dst, fmt.Errorf("protocol: dns: no header in %d bytes: %w", len(query), ErrSyntax)
	}
	if query[2]&0x80 != 0 {
		return dst, fmt.Errorf("protocol: dns: will not answer a response: %w", ErrNotQuery)
	}
	h := dnsmessage.Header{
		ID:               uint16(be16(query)),
		Response:         true,
		OpCode:           dnsmessage.OpCode(query[2] >> 3 & 0xf),
		RecursionDesired: query[2]&0x01 != 0,
		CheckingDisabled: query[3]&0x10 != 0,
		RCode:            rcode,
	}
	var p dnsmessage.Parser
	var q dnsmessage.Question
	ok := false
	if _, err := p.Start(query); err == nil {
		q, err = p.Question()
		ok = err == nil
	}
	if dst == nil {
		dst = make([]byte, 0, 512)
	}
	b := dnsmessage.NewBuilder(dst, h)
	if ok {
		if err := b.StartQuestions(); err != nil {
			return dst, fmt.Errorf("protocol: dns: %w", err)
		}
		if err := b.Question(q); err != nil {
			return dst, fmt.Errorf("protocol: dns: %w", err)
		}
	}
	out, err := b.Finish()
	if err != nil {
		return dst, fmt.Errorf("protocol: dns: %w", err)
	}
	return out, nil
}

// ParseDNSTCP parses the first length-prefixed DNS message of a DNS-over-TCP
// stream (RFC 1035 4.2.2). n is the length of that message with its 2-byte
// prefix. It answers NeedMore until the message is complete, and Malformed
// for a message shorter than a header, longer than MaxFirstBytes, or one
// ParseDNSQuery refuses.
func ParseDNSTCP(stream, nameBuf []byte) (q DNSQuery, n int, v Verdict, err error) {
	if len(stream) < 2 {
		return q, 0, NeedMore, nil
	}
	l := be16(stream)
	if l < dnsHeaderLen {
		return q, 0, Malformed, fmt.Errorf("protocol: dns: message length %d: %w", l, ErrSyntax)
	}
	if 2+l > MaxFirstBytes {
		return q, 0, Malformed, fmt.Errorf("protocol: dns: message length %d: %w", l, ErrTooLarge)
	}
	if len(stream) < 2+l {
		return q, 0, NeedMore, nil
	}
	q, err = ParseDNSQuery(stream[2:2+l], nameBuf)
	if err != nil {
		return q, 2 + l, Malformed, err
	}
	return q, 2 + l, Decided, nil
}

// dnsTCPParser routes DNS over TCP on the first query's name. Consume is 0:
// the backend gets the query. Its replies are DNS responses to that query
// with the TCP length prefix: REFUSED for NotAllowed, SERVFAIL for Refused,
// Unreachable and Timeout, FORMERR for BadRequest (also after Malformed,
// when the message had a full header).
type dnsTCPParser struct {
	msg  []byte // copy of the first message, for replies
	out  []byte
	name [255]byte
}

func (p *dnsTCPParser) Feed(stream []byte) Decision {
	q, n, v, err := ParseDNSTCP(stream, p.name[:0])
	if n >= 2+dnsHeaderLen {
		p.msg = append(p.msg[:0], stream[2:n]...)
	}
	if v != Decided {
		return Decision{Verdict: v, Err: err}
	}
	return Decision{Verdict: Decided, Name: string(q.Name)}
}

func (p *dnsTCPParser) Reply(o Outcome) []byte {
	var rcode dnsmessage.RCode
	switch o {
	case OK:
		return nil
	case NotAllowed:
		rcode = dnsmessage.RCodeRefused
	case Refused, Unreachable, Timeout:
		rcode = dnsmessage.RCodeServerFailure
	default:
		rcode = dnsmessage.RCodeFormatError
	}
	if len(p.msg) < dnsHeaderLen {
		return nil
	}
	if p.out == nil {
		p.out = make([]byte, 0, 512)
	}
	out, err := AppendDNSError(append(p.out[:0], 0, 0), p.msg, rcode)
	if err != nil {
		return nil
	}
	l := len(out) - 2
	out[0], out[1] = byte(l>>8), byte(l)
	p.out = out
	return out
}

func (p *dnsTCPParser) Reset() { p.msg = p.msg[:0] }
