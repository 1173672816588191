package protocol

import (
	"bytes"
	"fmt"
	"strings"
)

// fed is the result of feeding a stream to a parser.
type fed struct {
	d       Decision
	at      int    // prefix length at which the parser stopped asking for more
	replies []byte // every Decision.Reply handed out, concatenated
}

// feedPrefixes feeds p every prefix of stream, as the engine would one byte
// per segment, until the parser stops asking for more.
func feedPrefixes(p Parser, stream []byte) fed {
	return feedPrefixesStep(p, stream, 1)
}

// feedPrefixesStep is feedPrefixes with segments of step bytes.
func feedPrefixesStep(p Parser, stream []byte, step int) fed {
	p.Reset()
	var r fed
	for k := 0; k <= len(stream); k = nextCut(k, step, len(stream)) {
		d := p.Feed(stream[:k])
		r.replies = append(r.replies, d.Reply...)
		r.d, r.at = d, k
		if d.Verdict != NeedMore {
			break
		}
	}
	return r
}

// feedWhole feeds p the whole stream at once.
func feedWhole(p Parser, stream []byte) fed {
	p.Reset()
	d := p.Feed(stream)
	return fed{d: d, at: len(stream), replies: append([]byte(nil), d.Reply...)}
}

// checkDecision checks the invariants every decision must hold.
func checkDecision(proto string, stream []byte, d Decision) error {
	switch d.Verdict {
	case NeedMore:
		if d.Err != nil {
			return fmt.Errorf("NeedMore with error %v", d.Err)
		}
		if d.Name != "" || d.Consume != 0 {
			return fmt.Errorf("NeedMore with name %q consume %d", d.Name, d.Consume)
		}
	case Decided:
		if d.Err != nil {
			return fmt.Errorf("Decided with error %v", d.Err)
		}
		if d.Consume < 0 || d.Consume > len(stream) {
			return fmt.Errorf("Consume %d outside stream of %d", d.Consume, len(stream))
		}
		if err := saneName(proto, d.Name); err != nil {
			return err
		}
	case Malformed:
		if d.Err == nil {
			return fmt.Errorf("Malformed without error")
		}
	default:
		return fmt.Errorf("verdict %d", d.Verdict)
	}
	return nil
}

// saneName checks a routing name: lowercase printable ASCII, no trailing
// dot, bounded, and "host:port" for the protocols that route on it.
func saneName(proto, name string) error {
	if len(name) > nameBufLen {
		return fmt.Errorf("name of %d bytes", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c > '~' || ('A' <= c && c <= 'Z') {
			return fmt.Errorf("name %q has byte %#02x", name, c)
		}
	}
	host := name
	switch proto {
	case "dns":
		return nil // any printable name may be asked
	case "connect", "socks5", "instruction":
		i := strings.LastIndexByte(name, ':')
		if i < 0 {
			return fmt.Errorf("name %q without port", name)
		}
		if _, ok := parsePort([]byte(name[i+1:])); !ok {
			return fmt.Errorf("name %q with bad port", name)
		}
		host = name[:i]
		if strings.HasPrefix(host, "[") {
			if !strings.HasSuffix(host, "]") {
				return fmt.Errorf("name %q with bad brackets", name)
			}
			return nil
		}
	}
	if strings.HasSuffix(host, ".") {
		return fmt.Errorf("name %q ends in a dot", name)
	}
	if proto == "http" && strings.Contains(host, ":") {
		return nil // IPv6 literal
	}
	if strings.ContainsAny(host, ":[]") {
		return fmt.Errorf("name %q has a stray ':' or bracket", name)
	}
	return nil
}

// checkConsistent checks a parser fed byte by byte against one fed the
// whole stream: same verdict, name, ALPN and consume, same replies.
func checkConsistent(proto string, newParser func() Parser, stream []byte) error {
	return checkConsistentStep(proto, newParser, stream, 1)
}

func nextCut(k, step, n int) int {
	if k < n && k+step > n {
		return n
	}
	return k + step
}

// checkConsistentStep is checkConsistent with segments of step bytes.
func checkConsistentStep(proto string, newParser func() Parser, stream []byte, step int) error {
	inc := feedPrefixesStep(newParser(), stream, step)
	if err := checkDecision(proto, stream[:inc.at], inc.d); err != nil {
		return fmt.Errorf("incremental at %d: %w", inc.at, err)
	}
	if inc.d.Verdict == NeedMore {
		return nil
	}
	whole := feedWhole(newParser(), stream)
	if err := checkDecision(proto, stream, whole.d); err != nil {
		return fmt.Errorf("whole: %w", err)
	}
	if inc.d.Verdict != whole.d.Verdict || inc.d.Name != whole.d.Name || inc.d.ALPN != whole.d.ALPN || inc.d.Consume != whole.d.Consume {
		return fmt.Errorf("incremental %v %q %q %d (%v) != whole %v %q %q %d (%v)",
			inc.d.Verdict, inc.d.Name, inc.d.ALPN, inc.d.Consume, inc.d.Err,
			whole.d.Verdict, whole.d.Name, whole.d.ALPN, whole.d.Consume, whole.d.Err)
	}
	if !bytes.Equal(inc.replies, whole.replies) {
		return fmt.Errorf("incremental replies %x != whole replies %x", inc.replies, whole.replies)
	}
	return nil
}

func mustNew(proto string, opts Options) func() Parser {
	return func() Parser {
		p, err := New(proto, opts)
		if err != nil {
			panic(err)
		}
		return p
	}
}
