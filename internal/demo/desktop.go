package demo

import (
	"bufio"
	"context"
	"crypto/des"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync"
	"time"
)

// The demo desktop's framebuffer.
const (
	DesktopWidth  = 800
	DesktopHeight = 600
	DesktopName   = "Calipso demo desktop"
)

// RFB security types (RFC 6143 §7.2).
const (
	securityNone = 1
	securityVNC  = 2
)

// Client-to-server message types (RFC 6143 §7.5).
const (
	msgSetPixelFormat           = 0
	msgSetEncodings             = 2
	msgFramebufferUpdateRequest = 3
	msgKeyEvent                 = 4
	msgPointerEvent             = 5
	msgClientCutText            = 6
)

const (
	handshakeTimeout = 30 * time.Second
	maxCutText       = 16 << 20 // a larger clipboard is taken as a broken client
)

// PixelFormat is RFB's PIXEL_FORMAT (RFC 6143 §7.4).
type PixelFormat struct {
	BitsPerPixel, Depth, BigEndian, TrueColour uint8
	RedMax, GreenMax, BlueMax                  uint16
	RedShift, GreenShift, BlueShift            uint8
	_                                          [3]byte
}

// ServerInit is RFB's ServerInit message without the name that follows it.
type ServerInit struct {
	Width, Height uint16
	Format        PixelFormat
	NameLength    uint32
}

// desktopFormat is what the server offers: 32 bits per pixel, true colour.
var desktopFormat = PixelFormat{BitsPerPixel: 32, Depth: 24, TrueColour: 1,
	RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 16, GreenShift: 8, BlueShift: 0}

// Desktop serves the VNC-like workload on ln until ctx ends: the RFB 3.8 handshake
// (3.7 and 3.3 too) with VNC authentication by password, or none when password is
// empty, then a still picture sent as Raw rectangles. Input events are read and
// ignored.
func Desktop(ctx context.Context, ln net.Listener, password string, stdout io.Writer) error {
	out := &lockedWriter{w: stdout}
	auth := "VNC authentication"
	if password == "" {
		auth = "no authentication (no VNC password)"
	}
	fmt.Fprintf(out, "Calipso demo desktop: VNC server on %s, %s\n", ln.Addr(), auth)
	// Whatever ends the loop ends the connections too, before waiting for them.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintln(out, "desktop: shutting down")
				return nil
			}
			return fmt.Errorf("desktop: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopConn := context.AfterFunc(ctx, func() { conn.Close() })
			defer stopConn()
			defer conn.Close()
			err := serveRFB(conn, password)
			switch {
			case err == nil, errors.Is(err, io.EOF), ctx.Err() != nil:
				fmt.Fprintf(out, "desktop: client %s left\n", conn.RemoteAddr())
			default:
				fmt.Fprintf(out, "desktop: client %s: %v\n", conn.RemoteAddr(), err)
			}
		}()
	}
}

// serveRFB runs one client connection.
func serveRFB(conn net.Conn, password string) error {
	if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	if err := handshake(r, w, password); err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil { // an idle viewer may stay
		return err
	}
	format := desktopFormat
	for {
		typ, err := r.ReadByte()
		if err != nil {
			return err
		}
		switch typ {
		case msgSetPixelFormat:
			var m struct {
				_      [3]byte
				Format PixelFormat
			}
			if err := binary.Read(r, binary.BigEndian, &m); err != nil {
				return fmt.Errorf("SetPixelFormat: %w", err)
			}
			if err := m.Format.check(); err != nil {
				return fmt.Errorf("SetPixelFormat: %w", err)
			}
			format = m.Format
		case msgSetEncodings:
			var m struct {
				_     byte
				Count uint16
			}
			if err := binary.Read(r, binary.BigEndian, &m); err != nil {
				return fmt.Errorf("SetEncodings: %w", err)
			}
			// Raw, which every client decodes, is all this server sends.
			if _, err := r.Discard(4 * int(m.Count)); err != nil {
				return fmt.Errorf("SetEncodings: %w", err)
			}
		case msgFramebufferUpdateRequest:
			var m struct {
				Incremental         uint8
				X, Y, Width, Height uint16
			}
			if err := binary.Read(r, binary.BigEndian, &m); err != nil {
				return fmt.Errorf("FramebufferUpdateRequest: %w", err)
			}
			// The picture never changes: an incremental request has nothing to
			// answer until it does (answering at once would make the client spin).
			if m.Incremental != 0 {
				continue
			}
			if err := writeUpdate(w, format, m.X, m.Y, m.Width, m.Height); err != nil {
				return fmt.Errorf("FramebufferUpdate: %w", err)
			}
		case msgKeyEvent:
			if _, err := r.Discard(7); err != nil {
				return fmt.Errorf("KeyEvent: %w", err)
			}
		case msgPointerEvent:
			if _, err := r.Discard(5); err != nil {
				return fmt.Errorf("PointerEvent: %w", err)
			}
		case msgClientCutText:
			var m struct {
				_      [3]byte
				Length int32 // negative in the extended clipboard form: the length is its magnitude
			}
			if err := binary.Read(r, binary.BigEndian, &m); err != nil {
				return fmt.Errorf("ClientCutText: %w", err)
			}
			n := int64(m.Length)
			if n < 0 {
				n = -n
			}
			if n > maxCutText {
				return fmt.Errorf("ClientCutText: %d bytes", n)
			}
			if _, err := io.CopyN(io.Discard, r, n); err != nil {
				return fmt.Errorf("ClientCutText: %w", err)
			}
		default:
			// Its length is unknown: nothing after it can be read.
			return fmt.Errorf("unsupported client message type %d", typ)
		}
	}
}

// handshake runs the RFB handshake up to and including ServerInit (RFC 6143 §7.1,
// §7.2, §7.3). A version other than 3.7 or 3.8 is taken as 3.3, as the RFC says.
func handshake(r *bufio.Reader, w *bufio.Writer, password string) error {
	if _, err := w.WriteString("RFB 003.008\n"); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	var version [12]byte
	if _, err := io.ReadFull(r, version[:]); err != nil {
		return fmt.Errorf("read client version: %w", err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(string(version[:]), "RFB %03d.%03d\n", &major, &minor); err != nil || major != 3 {
		return fmt.Errorf("client version %q is not RFB 3.x", version[:])
	}
	switch {
	case minor >= 8:
		minor = 8
	case minor != 7:
		minor = 3
	}

	security := byte(securityVNC)
	if password == "" {
		security = securityNone
	}
	if minor >= 7 {
		// The list of types offered; the client answers with its choice.
		if _, err := w.Write([]byte{1, security}); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		chosen, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("read security type: %w", err)
		}
		if chosen != security {
			return securityFailure(w, minor, fmt.Sprintf("security type %d was not offered", chosen))
		}
	} else {
		// 3.3: the server decides.
		if err := binary.Write(w, binary.BigEndian, uint32(security)); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}

	if security == securityVNC {
		challenge := make([]byte, 16)
		_, _ = rand.Read(challenge) // never fails (crypto/rand aborts the program instead)
		if _, err := w.Write(challenge); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		response := make([]byte, 16)
		if _, err := io.ReadFull(r, response); err != nil {
			return fmt.Errorf("read VNC authentication response: %w", err)
		}
		want, err := VNCResponse(password, challenge)
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(response, want) != 1 {
			return securityFailure(w, minor, "authentication failed")
		}
	}
	// 3.3 and 3.7 send no SecurityResult after the None type.
	if security == securityVNC || minor >= 8 {
		if err := binary.Write(w, binary.BigEndian, uint32(0)); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}

	if _, err := r.ReadByte(); err != nil { // ClientInit: the shared flag (every viewer shares)
		return fmt.Errorf("read ClientInit: %w", err)
	}
	init := ServerInit{Width: DesktopWidth, Height: DesktopHeight, Format: desktopFormat, NameLength: uint32(len(DesktopName))}
	if err := binary.Write(w, binary.BigEndian, init); err != nil {
		return err
	}
	if _, err := w.WriteString(DesktopName); err != nil {
		return err
	}
	return w.Flush()
}

// securityFailure sends a failed SecurityResult (with its reason from 3.8 on) and
// returns the failure as an error.
func securityFailure(w *bufio.Writer, minor int, reason string) error {
	_ = binary.Write(w, binary.BigEndian, uint32(1))
	if minor >= 8 {
		_ = binary.Write(w, binary.BigEndian, uint32(len(reason)))
		_, _ = w.WriteString(reason)
	}
	_ = w.Flush()
	return errors.New("security handshake: " + reason)
}

// VNCResponse is the answer to a VNC authentication challenge: the 16 bytes
// encrypted with DES, keyed by the password's first 8 bytes (zero padded) with the
// bits of each byte reversed, as VNC has always done.
func VNCResponse(password string, challenge []byte) ([]byte, error) {
	if len(challenge) != 16 {
		return nil, fmt.Errorf("VNC challenge of %d bytes, want 16", len(challenge))
	}
	key := make([]byte, 8)
	copy(key, password)
	for i, b := range key {
		key[i] = bits.Reverse8(b)
	}
	block, err := des.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("VNC authentication: %w", err)
	}
	out := make([]byte, 16)
	block.Encrypt(out[:8], challenge[:8])
	block.Encrypt(out[8:], challenge[8:])
	return out, nil
}

// check refuses pixel formats this server cannot write: colour maps, and sizes
// other than 8, 16 or 32 bits.
func (f PixelFormat) check() error {
	if f.TrueColour == 0 {
		return errors.New("colour-map pixel formats are not supported")
	}
	switch f.BitsPerPixel {
	case 8, 16, 32:
	default:
		return fmt.Errorf("%d bits per pixel is not supported", f.BitsPerPixel)
	}
	if f.RedShift >= f.BitsPerPixel || f.GreenShift >= f.BitsPerPixel || f.BlueShift >= f.BitsPerPixel {
		return errors.New("colour shifts beyond the pixel size")
	}
	return nil
}

// pixel encodes an 8-bit-per-channel colour in format f.
func (f PixelFormat) pixel(dst []byte, r, g, b uint32) {
	v := (r*uint32(f.RedMax)/255)<<f.RedShift | (g*uint32(f.GreenMax)/255)<<f.GreenShift | (b*uint32(f.BlueMax)/255)<<f.BlueShift
	var order binary.ByteOrder = binary.LittleEndian
	if f.BigEndian != 0 {
		order = binary.BigEndian
	}
	switch f.BitsPerPixel {
	case 8:
		dst[0] = byte(v)
	case 16:
		order.PutUint16(dst, uint16(v))
	default:
		order.PutUint32(dst, v)
	}
}

// DesktopColour is the picture: a calm gradient, so that a viewer shows that the
// pixels arrived.
func DesktopColour(x, y int) (r, g, b uint32) {
	return uint32(20 + x*60/DesktopWidth), uint32(60 + y*100/DesktopHeight), 150
}

// writeUpdate sends one FramebufferUpdate of the requested area (clipped to the
// framebuffer) as a Raw rectangle.
func writeUpdate(w *bufio.Writer, f PixelFormat, x, y, width, height uint16) error {
	x, width = clip(x, width, DesktopWidth)
	y, height = clip(y, height, DesktopHeight)
	rects := uint16(1)
	if width == 0 || height == 0 {
		rects = 0
	}
	header := struct {
		Type  uint8
		_     uint8
		Rects uint16
	}{Type: 0, Rects: rects}
	if err := binary.Write(w, binary.BigEndian, header); err != nil {
		return err
	}
	if rects == 1 {
		rect := struct {
			X, Y, Width, Height uint16
			Encoding            int32
		}{x, y, width, height, 0}
		if err := binary.Write(w, binary.BigEndian, rect); err != nil {
			return err
		}
		size := int(f.BitsPerPixel) / 8
		row := make([]byte, int(width)*size)
		for py := int(y); py < int(y)+int(height); py++ {
			for i := range int(width) {
				r, g, b := DesktopColour(int(x)+i, py)
				f.pixel(row[i*size:], r, g, b)
			}
			if _, err := w.Write(row); err != nil {
				return err
			}
		}
	}
	return w.Flush()
}

// clip limits [pos, pos+n) to [0, limit).
func clip(pos, n, limit uint16) (uint16, uint16) {
	if pos >= limit {
		return pos, 0
	}
	return pos, min(n, limit-pos)
}

// lockedWriter serialises the log lines of concurrent connections.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
