package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Known answers computed with OpenSSL's DES (`openssl enc -des-ecb -nopad`) keyed
// by the password with each byte's bits reversed: an implementation independent of
// the one under test.
func TestVNCResponse(t *testing.T) {
	cases := []struct {
		name, password, challenge, want string
	}{
		{"short password", "secret", "000102030405060708090a0b0c0d0e0f", "ee22539f33a5983ec12f9c2edbc995dd"},
		{"only the first 8 bytes count", "longpassword", "ffeeddccbbaa99887766554433221100", "f4e80437d9839abed2c0bd7dcac8a5fc"},
		{"first 8 bytes, longer still", "longpassXYZ", "ffeeddccbbaa99887766554433221100", "f4e80437d9839abed2c0bd7dcac8a5fc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			challenge, _ := hex.DecodeString(c.challenge)
			got, err := VNCResponse(c.password, challenge)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != c.want {
				t.Fatalf("response %x, want %s", got, c.want)
			}
		})
	}
	if _, err := VNCResponse("x", make([]byte, 8)); err == nil {
		t.Fatal("an 8-byte challenge was accepted")
	}
}

// startDesktop runs Desktop on a loopback port until the test ends and returns its
// address and log.
func startDesktop(t *testing.T, password string) (string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Desktop(ctx, ln, password, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Desktop: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Desktop did not stop within 5s of its context")
		}
	})
	return ln.Addr().String(), log
}

// vncClient is a minimal RFB client of the tests.
type vncClient struct {
	conn net.Conn
	r    *bufio.Reader
	init ServerInit
	name string
}

// dialVNC connects and runs the handshake as an RFB client of version minor
// (3, 7 or 8) with password; the error is the server's refusal, if any.
func dialVNC(t *testing.T, addr string, minor int, password string) (*vncClient, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &vncClient{conn: conn, r: bufio.NewReader(conn)}
	return c, c.handshake(minor, password)
}

func (c *vncClient) handshake(minor int, password string) error {
	var version [12]byte
	if _, err := io.ReadFull(c.r, version[:]); err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	if string(version[:]) != "RFB 003.008\n" {
		return fmt.Errorf("server version %q", version[:])
	}
	fmt.Fprintf(c.conn, "RFB 003.%03d\n", minor)
	var security uint32
	if minor >= 7 {
		var n uint8
		binary.Read(c.r, binary.BigEndian, &n)
		types := make([]byte, n)
		if _, err := io.ReadFull(c.r, types); err != nil || n != 1 {
			return fmt.Errorf("security types %v: %v", types, err)
		}
		security = uint32(types[0])
		c.conn.Write(types[:1])
	} else if err := binary.Read(c.r, binary.BigEndian, &security); err != nil {
		return err
	}
	if security == securityVNC {
		challenge := make([]byte, 16)
		if _, err := io.ReadFull(c.r, challenge); err != nil {
			return err
		}
		response, err := VNCResponse(password, challenge)
		if err != nil {
			return err
		}
		c.conn.Write(response)
	}
	if security == securityVNC || minor >= 8 {
		var result uint32
		if err := binary.Read(c.r, binary.BigEndian, &result); err != nil {
			return fmt.Errorf("SecurityResult: %w", err)
		}
		if result != 0 {
			reason := ""
			if minor >= 8 {
				var n uint32
				binary.Read(c.r, binary.BigEndian, &n)
				b := make([]byte, n)
				io.ReadFull(c.r, b)
				reason = string(b)
			}
			return fmt.Errorf("refused (security type %d): %s", security, reason)
		}
	}
	c.conn.Write([]byte{1}) // ClientInit, shared
	if err := binary.Read(c.r, binary.BigEndian, &c.init); err != nil {
		return fmt.Errorf("ServerInit: %w", err)
	}
	name := make([]byte, c.init.NameLength)
	if _, err := io.ReadFull(c.r, name); err != nil {
		return fmt.Errorf("ServerInit name: %w", err)
	}
	c.name = string(name)
	return nil
}

// update requests a non-incremental update of the area and returns its one Raw
// rectangle's pixels.
func (c *vncClient) update(t *testing.T, x, y, w, h uint16, bytesPerPixel int) (rect [4]uint16, pixels []byte) {
	t.Helper()
	binary.Write(c.conn, binary.BigEndian, struct {
		Type, Incremental uint8
		X, Y, W, H        uint16
	}{msgFramebufferUpdateRequest, 0, x, y, w, h})
	var header struct {
		Type  uint8
		_     uint8
		Rects uint16
	}
	if err := binary.Read(c.r, binary.BigEndian, &header); err != nil || header.Type != 0 || header.Rects != 1 {
		t.Fatalf("FramebufferUpdate header %+v: %v", header, err)
	}
	var r struct {
		X, Y, W, H uint16
		Encoding   int32
	}
	if err := binary.Read(c.r, binary.BigEndian, &r); err != nil || r.Encoding != 0 {
		t.Fatalf("rectangle %+v: %v", r, err)
	}
	pixels = make([]byte, int(r.W)*int(r.H)*bytesPerPixel)
	if _, err := io.ReadFull(c.r, pixels); err != nil {
		t.Fatalf("pixels: %v", err)
	}
	return [4]uint16{r.X, r.Y, r.W, r.H}, pixels
}

func TestDesktopHandshake(t *testing.T) {
	cases := []struct {
		name           string
		serverPassword string
		clientPassword string
		minor          int
		refused        bool
	}{
		{"3.8 right password", "s3cret-pw", "s3cret-pw", 8, false},
		{"3.8 wrong password", "s3cret-pw", "guess", 8, true},
		{"3.8 empty password is refused too", "s3cret-pw", "", 8, true},
		{"3.7 right password", "s3cret-pw", "s3cret-pw", 7, false},
		{"3.7 wrong password", "s3cret-pw", "guess", 7, true},
		{"3.3 right password", "s3cret-pw", "s3cret-pw", 3, false},
		{"3.3 wrong password", "s3cret-pw", "guess", 3, true},
		{"3.8 no password: security None", "", "", 8, false},
		{"3.7 no password: security None", "", "", 7, false},
		{"3.3 no password: security None", "", "", 3, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, log := startDesktop(t, c.serverPassword)
			client, err := dialVNC(t, addr, c.minor, c.clientPassword)
			if c.refused {
				if err == nil {
					t.Fatal("a wrong password was accepted")
				}
				if c.minor >= 8 && !strings.Contains(err.Error(), "authentication failed") {
					t.Errorf("refusal gives no reason: %v", err)
				}
				// The server hangs up after a refusal.
				if _, err := client.r.ReadByte(); !errors.Is(err, io.EOF) {
					t.Errorf("connection still open after the refusal: %v", err)
				}
				waitFor(t, log, "authentication failed")
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if client.init.Width != DesktopWidth || client.init.Height != DesktopHeight || client.name != DesktopName ||
				client.init.Format != desktopFormat {
				t.Fatalf("ServerInit %+v %q", client.init, client.name)
			}
		})
	}
}

func TestDesktopSecurityTypeNotOffered(t *testing.T) {
	addr, _ := startDesktop(t, "pw")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.ReadFull(conn, make([]byte, 12))
	io.WriteString(conn, "RFB 003.008\n")
	io.ReadFull(conn, make([]byte, 2)) // [1, 2]
	conn.Write([]byte{securityNone})   // a client that skips authentication
	var result uint32
	if err := binary.Read(conn, binary.BigEndian, &result); err != nil || result != 1 {
		t.Fatalf("SecurityResult %d, %v; want 1 (failed)", result, err)
	}
}

func TestDesktopFramebuffer(t *testing.T) {
	addr, log := startDesktop(t, "pw")
	c, err := dialVNC(t, addr, 8, "pw")
	if err != nil {
		t.Fatal(err)
	}
	// What a launch waits for (the record's log_regex).
	if !regexp.MustCompile(DesktopLogRegex).MatchString(log.String()) {
		t.Errorf("log does not match %q:\n%s", DesktopLogRegex, log)
	}

	// The server's own format: 32-bit little-endian, red at bit 16.
	rect, pixels := c.update(t, 0, 0, DesktopWidth, DesktopHeight, 4)
	if rect != [4]uint16{0, 0, DesktopWidth, DesktopHeight} {
		t.Fatalf("rectangle %v", rect)
	}
	checkPixel := func(pixels []byte, width, x, y int, decode func([]byte) (r, g, b uint32), size int) {
		t.Helper()
		r, g, b := decode(pixels[(y*width+x)*size:])
		wr, wg, wb := DesktopColour(x, y)
		if r != wr || g != wg || b != wb {
			t.Errorf("pixel (%d,%d) = %d,%d,%d, want %d,%d,%d", x, y, r, g, b, wr, wg, wb)
		}
	}
	server := func(p []byte) (uint32, uint32, uint32) {
		v := binary.LittleEndian.Uint32(p)
		return v >> 16 & 255, v >> 8 & 255, v & 255
	}
	for _, p := range [][2]int{{0, 0}, {799, 599}, {400, 300}} {
		checkPixel(pixels, DesktopWidth, p[0], p[1], server, 4)
	}

	// Input the server ignores, with lengths it must read right: the next request
	// still parses.
	var input bytes.Buffer
	input.Write([]byte{msgSetEncodings, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 16, 0xff, 0xff, 0xff, 0x21}) // Raw, ZRLE, DesktopSize
	input.Write([]byte{msgKeyEvent, 1, 0, 0, 0, 0, 0xff, 0x0d})
	input.Write([]byte{msgPointerEvent, 1, 0, 10, 0, 20})
	input.Write([]byte{msgClientCutText, 0, 0, 0, 0, 0, 0, 5})
	input.WriteString("hello")
	input.Write([]byte{msgFramebufferUpdateRequest, 1, 0, 0, 0, 0, 3, 32, 2, 88}) // incremental: no answer
	// A big-endian 16-bit 5-6-5 format, as a thin client may ask for.
	format := PixelFormat{BitsPerPixel: 16, Depth: 16, BigEndian: 1, TrueColour: 1, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5}
	input.Write([]byte{msgSetPixelFormat, 0, 0, 0})
	binary.Write(&input, binary.BigEndian, format)
	c.conn.Write(input.Bytes())

	// Clipped to the framebuffer.
	rect, pixels = c.update(t, 790, 590, 100, 100, 2)
	if rect != [4]uint16{790, 590, 10, 10} {
		t.Fatalf("clipped rectangle %v", rect)
	}
	rgb565 := func(p []byte) (uint32, uint32, uint32) {
		v := uint32(binary.BigEndian.Uint16(p))
		return v >> 11 & 31, v >> 5 & 63, v & 31
	}
	for y := range 10 {
		for x := range 10 {
			r, g, b := rgb565(pixels[(y*10+x)*2:])
			wr, wg, wb := DesktopColour(790+x, 590+y)
			if r != wr*31/255 || g != wg*63/255 || b != wb*31/255 {
				t.Fatalf("pixel (%d,%d) = %d,%d,%d in 5-6-5, want %d,%d,%d", x, y, r, g, b, wr*31/255, wg*63/255, wb*31/255)
			}
		}
	}
}

func TestDesktopRefusesWhatItCannotRead(t *testing.T) {
	cases := []struct {
		name string
		msg  []byte
		log  string
	}{
		{"colour map format", append([]byte{msgSetPixelFormat, 0, 0, 0}, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "colour-map"},
		{"24 bits per pixel", append([]byte{msgSetPixelFormat, 0, 0, 0}, 24, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0), "24 bits per pixel"},
		{"unknown message", []byte{200, 1, 2, 3}, "unsupported client message type 200"},
		{"huge clipboard", []byte{msgClientCutText, 0, 0, 0, 0x7f, 0, 0, 0}, "ClientCutText"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, log := startDesktop(t, "pw")
			client, err := dialVNC(t, addr, 8, "pw")
			if err != nil {
				t.Fatal(err)
			}
			client.conn.Write(c.msg)
			if _, err := client.r.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("connection not closed: %v", err)
			}
			waitFor(t, log, c.log)
		})
	}
}

// A viewer still connected when the workload is stopped does not hold it up.
func TestDesktopStopsWithClientsConnected(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Desktop(ctx, ln, "pw", io.Discard) }()
	if _, err := dialVNC(t, ln.Addr().String(), 8, "pw"); err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", ln.Addr().String()) // mid-handshake
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Desktop did not stop with clients connected")
	}
}

// syncBuffer is a log the workload writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the log holds want.
func waitFor(t *testing.T, log *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", want, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
