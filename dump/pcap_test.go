package dump

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func TestStripLink(t *testing.T) {
	ip := fixture(t)[0].ip
	vlan := append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 7, 0x08, 0}, ip...)
	arp := append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06}, make([]byte, 28)...)
	loop := append([]byte{0, 0, 0, 2}, ip...)
	tests := []struct {
		name  string
		lt    layers.LinkType
		frame []byte
		err   string
	}{
		{"ethernet", layers.LinkTypeEthernet, frame(layers.LinkTypeEthernet, ip), ""},
		{"ethernet vlan", layers.LinkTypeEthernet, vlan, ""},
		{"ethernet arp", layers.LinkTypeEthernet, arp, "ethernet: ethertype 0x0806 is not IP"},
		{"ethernet short", layers.LinkTypeEthernet, ip[:10], "ethernet: header truncated: have 10 of 14 bytes"},
		{"ethernet vlan short", layers.LinkTypeEthernet, vlan[:16], "ethernet: vlan tag truncated"},
		{"raw", layers.LinkTypeRaw, ip, ""},
		{"ipv4", layers.LinkTypeIPv4, ip, ""},
		{"sll", layers.LinkTypeLinuxSLL, frame(layers.LinkTypeLinuxSLL, ip), ""},
		{"sll short", layers.LinkTypeLinuxSLL, ip[:15], "linux sll: header truncated: have 15 of 16 bytes"},
		{"sll2", layers.LinkTypeLinuxSLL2, frame(layers.LinkTypeLinuxSLL2, ip), ""},
		{"sll2 short", layers.LinkTypeLinuxSLL2, ip[:19], "linux sll2: header truncated"},
		{"null", layers.LinkTypeNull, frame(layers.LinkTypeNull, ip), ""},
		{"loop", layers.LinkTypeLoop, loop, ""},
		{"null not ip", layers.LinkTypeNull, []byte{0, 0, 0, 7, 0x10}, "loopback: family 00000007 is not IP"},
		{"null short", layers.LinkTypeNull, []byte{2, 0}, "loopback: header truncated"},
		{"unsupported", layers.LinkTypeIEEE802_11, ip, "link type not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stripLink(tt.lt, tt.frame)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, ip) {
				t.Fatalf("got % x, %v; want the IP packet", got, err)
			}
		})
	}
}

func TestReadPcapErrors(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "fixture.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	var wifi bytes.Buffer
	w := pcapgo.NewWriter(&wifi)
	if err := w.WriteFileHeader(65535, layers.LinkTypeIEEE802_11); err != nil {
		t.Fatal(err)
	}
	_ = w.WritePacket(gopacket.CaptureInfo{CaptureLength: 1, Length: 1}, []byte{0})

	stop := errors.New("stop")
	tests := []struct {
		name  string
		input []byte
		fn    func(*Packet) error
		err   string
		calls int
	}{
		{name: "empty", input: nil, err: "pcap: read file header: unexpected EOF"},
		{name: "garbage", input: []byte("this is no capture file"), err: "pcap: "},
		{name: "cut record", input: good[:len(good)-5], err: "pcap: packet 13: unexpected EOF", calls: 12},
		{name: "fn error stops", input: good, fn: func(*Packet) error { return stop }, err: "stop", calls: 1},
		{name: "unsupported link type", input: wifi.Bytes(), err: "pcap: link type not supported: 802.11 (105)"},
		{name: "all", input: good, calls: 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := ReadPcap(bytes.NewReader(tt.input), func(p *Packet) error {
				calls++
				if tt.fn != nil {
					return tt.fn(p)
				}
				return nil
			})
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("error %v, want %q", err, tt.err)
			}
			if calls != tt.calls {
				t.Errorf("fn called %d times, want %d", calls, tt.calls)
			}
		})
	}
}
