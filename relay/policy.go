package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// policy is what the relay installs in the kernel for transparent
// sockets: the nftables table, and for IPv4 and IPv6 the equivalent of
//
//	ip rule add fwmark MARK/MARK lookup TABLE priority PRIO
//	ip route add local 0.0.0.0/0 dev lo table TABLE   (and ::/0)
//
// so that marked packets addressed to other hosts are delivered locally,
// to the transparent socket the nftables rule found for them. The rules
// and routes are written over rtnetlink (mdlayher/netlink), not by running
// ip.
type policy struct {
	mark, table, prio uint32
	tproxyPorts       []uint16
}

func (p *policy) install() (err error) {
	// A killed relay may have left its rules: remove them first, so that
	// exactly one of each exists afterwards.
	if err := p.removeRouting(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.remove())
		}
	}()
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("relay: rtnetlink: %w", err)
	}
	defer c.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("relay: loopback: %w", err)
	}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := rtExec(c, unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, p.route(fam, lo.Index)); err != nil {
			return fmt.Errorf("relay: add local route table %d (family %d): %w", p.table, fam, err)
		}
		if err := rtExec(c, unix.RTM_NEWRULE, netlink.Create|netlink.Excl, p.rule(fam)); err != nil {
			return fmt.Errorf("relay: add rule fwmark %#x (family %d): %w", p.mark, fam, err)
		}
	}
	return installNFT(p.mark, p.tproxyPorts)
}

// remove deletes the table, rules and routes; missing ones are fine.
func (p *policy) remove() error {
	return errors.Join(removeNFT(), p.removeRouting())
}

func (p *policy) removeRouting() error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("relay: rtnetlink: %w", err)
	}
	defer c.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("relay: loopback: %w", err)
	}
	var errs []error
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, m := range []struct {
			typ  netlink.HeaderType
			body []byte
		}{{unix.RTM_DELRULE, p.rule(fam)}, {unix.RTM_DELROUTE, p.route(fam, lo.Index)}} {
			for range 16 { // duplicates from earlier runs
				err := rtExec(c, m.typ, 0, m.body)
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
					break
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("relay: rtnetlink delete (type %d, family %d): %w", m.typ, fam, err))
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}

// rule is a struct fib_rule_hdr with FRA_PRIORITY, FRA_FWMARK, FRA_FWMASK
// and FRA_TABLE: fwmark MARK/MARK lookup TABLE.
func (p *policy) rule(fam uint8) []byte {
	b := make([]byte, 12)
	b[0] = fam
	b[4] = unix.RT_TABLE_UNSPEC // the table is in FRA_TABLE (it may exceed 255)
	b[7] = unix.FR_ACT_TO_TBL
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.FRA_PRIORITY, Data: u32(p.prio)},
		{Type: unix.FRA_FWMARK, Data: u32(p.mark)},
		{Type: unix.FRA_FWMASK, Data: u32(p.mark)},
		{Type: unix.FRA_TABLE, Data: u32(p.table)},
	})
	return append(b, attrs...)
}

// route is a struct rtmsg with RTA_TABLE and RTA_OIF: local default dev lo.
func (p *policy) route(fam uint8, lo int) []byte {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = fam
	b[4] = unix.RT_TABLE_UNSPEC
	b[5] = unix.RTPROT_STATIC
	b[6] = unix.RT_SCOPE_HOST
	b[7] = unix.RTN_LOCAL
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.RTA_TABLE, Data: u32(p.table)},
		{Type: unix.RTA_OIF, Data: u32(uint32(lo))},
	})
	return append(b, attrs...)
}

func rtExec(c *netlink.Conn, typ netlink.HeaderType, flags netlink.HeaderFlags, body []byte) error {
	_, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   body,
	})
	return err
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
