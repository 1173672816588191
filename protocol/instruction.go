package protocol

import (
	"errors"
	"fmt"
)

// ErrChecksum reports an instruction whose checksum does not match.
var ErrChecksum = errors.New("checksum mismatch")

// minInstruction is the shortest instruction: "07" + "a:1" + "CC".
const minInstruction = 2 + 3 + 2

// Replies of the instruction parser.
var (
	instructionOK         = []byte("00")
	instructionNotAllowed = []byte("01")
	instructionFailed     = []byte("02")
	instructionBad        = []byte("03")
)

// instructionParser reads "LL" + "host:port" + "CC": LL is the total length
// in two decimal digits (LL and CC included), CC the sum of the bytes of
// host:port modulo 100 in two decimal digits. Example: "1710.0.1.2:808048".
type instructionParser struct {
	name [nameBufLen]byte
}

// CheckInstruction returns the host:port of the complete instruction at the
// start of b and its total length, without canonicalising the host.
func CheckInstruction(b []byte) (hostport []byte, n int, v Verdict, err error) {
	for i := 0; i < len(b) && i < 2; i++ {
		if b[i] < '0' || b[i] > '9' {
			return nil, 0, Malformed, fmt.Errorf("protocol: instruction: length byte %#02x is not a digit: %w", b[i], ErrSyntax)
		}
	}
	if len(b) < 2 {
		return nil, 0, NeedMore, nil
	}
	n = int(b[0]-'0')*10 + int(b[1]-'0')
	if n < minInstruction {
		return nil, 0, Malformed, fmt.Errorf("protocol: instruction: length %d below %d: %w", n, minInstruction, ErrSyntax)
	}
	// Fail early on bytes that cannot be in host:port.
	for _, c := range b[2:min(len(b), n-2)] {
		if !isHostPortByte(c) {
			return nil, 0, Malformed, fmt.Errorf("protocol: instruction: byte %#02x in host:port: %w", c, ErrBadName)
		}
	}
	if len(b) < n {
		return nil, 0, NeedMore, nil
	}
	hostport = b[2 : n-2]
	cc := b[n-2 : n]
	if cc[0] < '0' || cc[0] > '9' || cc[1] < '0' || cc[1] > '9' {
		return nil, 0, Malformed, fmt.Errorf("protocol: instruction: checksum %q is not two digits: %w", cc, ErrSyntax)
	}
	if got, want := InstructionChecksum(hostport), int(cc[0]-'0')*10+int(cc[1]-'0'); got != want {
		return nil, 0, Malformed, fmt.Errorf("protocol: instruction: checksum %02d, computed %02d: %w", want, got, ErrChecksum)
	}
	return hostport, n, Decided, nil
}

// InstructionChecksum returns the sum of the bytes of hostport modulo 100.
func InstructionChecksum(hostport []byte) int {
	sum := 0
	for _, c := range hostport {
		sum += int(c)
	}
	return sum % 100
}

// AppendInstruction appends the instruction for hostport, or reports false
// when it would not fit in 99 bytes.
func AppendInstruction(b []byte, hostport string) ([]byte, bool) {
	n := 2 + len(hostport) + 2
	if n > 99 {
		return b, false
	}
	cs := 0
	for i := 0; i < len(hostport); i++ {
		cs += int(hostport[i])
	}
	cs %= 100
	b = append(b, byte('0'+n/10), byte('0'+n%10))
	b = append(b, hostport...)
	return append(b, byte('0'+cs/10), byte('0'+cs%10)), true
}

func isHostPortByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '.', '-', '_', ':', '[', ']':
		return true
	}
	return false
}

func (p *instructionParser) Feed(stream []byte) Decision {
	hp, n, v, err := CheckInstruction(stream)
	if v != Decided {
		return Decision{Verdict: v, Err: err}
	}
	name, ok := appendHostPort(p.name[:0], hp)
	if !ok {
		return Decision{Verdict: Malformed, Err: fmt.Errorf("protocol: instruction: %q is not host:port: %w", hp, ErrBadName)}
	}
	return Decision{Verdict: Decided, Name: string(name), Consume: n}
}

// Reply returns "00" for OK, "01" for NotAllowed, "02" for Refused,
// Unreachable and Timeout, "03" for BadRequest.
func (p *instructionParser) Reply(o Outcome) []byte {
	switch o {
	case OK:
		return instructionOK
	case NotAllowed:
		return instructionNotAllowed
	case Refused, Unreachable, Timeout:
		return instructionFailed
	}
	return instructionBad
}

func (p *instructionParser) Reset() {}
