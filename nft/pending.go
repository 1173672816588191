package nft

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Tuple is a TCP flow's addresses as one packet carries them: from Src to Dst.
type Tuple struct {
	Src, Dst netip.AddrPort
}

// Key encodes the tuple as a key of the pending sets: saddr . sport . daddr
// . dport, each part padded to 32 bits.
func (t Tuple) Key() []byte {
	k := make([]byte, 0, 40)
	k = append(k, t.Src.Addr().AsSlice()...)
	k = append(k, byte(t.Src.Port()>>8), byte(t.Src.Port()), 0, 0)
	k = append(k, t.Dst.Addr().AsSlice()...)
	return append(k, byte(t.Dst.Port()>>8), byte(t.Dst.Port()), 0, 0)
}

func pendingSetOf(t Tuple) *nftables.Set {
	name := SetPending4
	if t.Src.Addr().Is6() {
		name = SetPending6
	}
	return &nftables.Set{
		Table:         &nftables.Table{Name: Table, Family: nftables.TableFamilyINet},
		Name:          name,
		Concatenation: true,
		HasTimeout:    true,
	}
}

// AddPending adds flows to the pending sets, so that their packets are
// queued to falg, in one transaction.
func AddPending(c *nftables.Conn, ts ...Tuple) error {
	for _, t := range ts {
		if err := c.SetAddElements(pendingSetOf(t), []nftables.SetElement{{Key: t.Key()}}); err != nil {
			return fmt.Errorf("nft: add pending %v: %w", t, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft: add %d pending flows: %w", len(ts), err)
	}
	return nil
}

// DelPending removes flows from the pending sets in one transaction. A
// flow no longer in the set is not an error: it may have timed out.
func DelPending(c *nftables.Conn, ts ...Tuple) error {
	for _, t := range ts {
		if err := c.SetDeleteElements(pendingSetOf(t), []nftables.SetElement{{Key: t.Key()}}); err != nil {
			return fmt.Errorf("nft: delete pending %v: %w", t, err)
		}
	}
	err := c.Flush()
	if err == nil || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return fmt.Errorf("nft: delete %d pending flows: %w", len(ts), err)
		}
		return nil
	}
	// One missing element fails the whole batch: delete one by one.
	for _, t := range ts {
		if err := c.SetDeleteElements(pendingSetOf(t), []nftables.SetElement{{Key: t.Key()}}); err != nil {
			return fmt.Errorf("nft: delete pending %v: %w", t, err)
		}
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nft: delete pending %v: %w", t, err)
		}
	}
	return nil
}
