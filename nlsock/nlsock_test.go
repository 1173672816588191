package nlsock

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// message returns a netlink message of type typ with sequence number seq,
// asking for an acknowledgement, and an empty nfgenmsg.
func message(typ uint16, seq uint32) []byte {
	b := binary.NativeEndian.AppendUint32(nil, unix.NLMSG_HDRLEN+4)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, 0, 0, 0, 0)
}

// TestConn talks to the kernel: it acknowledges a no-op, refuses a message
// type nfnetlink does not know, and a read with nothing to read times out.
// It changes no kernel state.
func TestConn(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CAP_NET_ADMIN) to talk to nfnetlink")
		}
		t.Skip("needs root")
	}
	c, err := Dial(50 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unknown := uint16(unix.NFNL_SUBSYS_QUEUE<<8 | 99)
	if err := c.Write(append(message(unix.NLMSG_NOOP, 7), message(unknown, 8)...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if err := c.Acks(buf, 7, 7); err != nil {
		t.Errorf("no-op: %v, want an acknowledgement", err)
	}
	if err := c.Acks(buf, 8, 8); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unknown message type: %v, want EINVAL", err)
	}
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read with nothing queued: %v, want a timeout", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
