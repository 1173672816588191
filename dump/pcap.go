package dump

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// pcapng files start with a section header block of this type.
const ngMagic = 0x0a0d0d0a

// ReadPcap reads a pcap or pcapng capture from r and calls fn for every
// packet in order, with the link layer stripped (Ethernet with VLAN tags,
// raw IP, Linux SLL and SLL2, BSD loopback). A frame that carries no IP
// packet is passed with Packet.Err set. The Packet and its Data are valid
// only during the call. ReadPcap stops at the end of the capture, at a
// damaged record, or at the first error fn returns, and returns that error.
func ReadPcap(r io.Reader, fn func(*Packet) error) error {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(4)
	if err != nil {
		return fmt.Errorf("pcap: read file header: %w", noEOF(err))
	}
	var (
		read     func() ([]byte, gopacket.CaptureInfo, error)
		linkType func(ci gopacket.CaptureInfo) layers.LinkType
	)
	if binary.LittleEndian.Uint32(magic) == ngMagic {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return fmt.Errorf("pcapng: %w", err)
		}
		read = ng.ZeroCopyReadPacketData
		linkType = func(ci gopacket.CaptureInfo) layers.LinkType {
			if intf, err := ng.Interface(ci.InterfaceIndex); err == nil {
				return intf.LinkType
			}
			return ng.LinkType()
		}
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return fmt.Errorf("pcap: %w", err)
		}
		lt := pr.LinkType()
		if _, err := stripLink(lt, nil); errors.Is(err, errLinkType) {
			return fmt.Errorf("pcap: %w", err)
		}
		read = pr.ZeroCopyReadPacketData
		linkType = func(gopacket.CaptureInfo) layers.LinkType { return lt }
	}
	var p Packet
	for n := 1; ; n++ {
		frame, ci, err := read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pcap: packet %d: %w", n, err)
		}
		p = Packet{Time: ci.Timestamp}
		p.Data, p.Err = stripLink(linkType(ci), frame)
		if err := fn(&p); err != nil {
			return err
		}
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
