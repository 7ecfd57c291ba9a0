package mail_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/internal/mail"
	"github.com/calipsoplus/calipso/internal/testenv"
)

// TestNotify sends through a real SMTP server (mailpit), with and without
// authentication, and fails clearly, within its timeout, when none answers.
func TestNotify(t *testing.T) {
	smtp := testenv.StartSMTPServer(t)
	m, err := mail.New(mail.Config{Host: smtp.Host, Port: smtp.Port, TLS: "none", From: "Calipso <calipso@facility.example>"})
	if err != nil {
		t.Fatal(err)
	}
	const subject = "Calipso: your desktop will be stopped"
	if err := m.Notify(context.Background(), []string{"ana@facility.example"}, subject, "Hello ana,\n\nIts lifetime ends soon.\n"); err != nil {
		t.Fatal(err)
	}
	got := smtp.WaitFor(t, "ana@facility.example", subject)
	if got.From != "calipso@facility.example" || !strings.Contains(got.Text, "lifetime ends soon") {
		t.Errorf("received %+v", got)
	}
	if _, err := mail.New(mail.Config{Host: smtp.Host, Port: smtp.Port, TLS: "none", From: "calipso@facility.example", Username: "relay", Password: "secret"}); err == nil {
		t.Error("credentials would go in clear")
	}

	// Nobody listening: ErrSend, not a hang.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	m, _ = mail.New(mail.Config{Host: "127.0.0.1", Port: port, TLS: "none", From: "calipso@facility.example", Timeout: 2 * time.Second})
	if err := m.Notify(context.Background(), []string{"ana@facility.example"}, "x", "y"); !errors.Is(err, mail.ErrSend) {
		t.Fatalf("no server: %v", err)
	}
	// STARTTLS required, and this server offers none: refused, never sent in clear.
	m, _ = mail.New(mail.Config{Host: smtp.Host, Port: smtp.Port, TLS: "starttls", From: "calipso@facility.example", Timeout: 5 * time.Second})
	if err := m.Notify(context.Background(), []string{"ana@facility.example"}, "in clear", "y"); !errors.Is(err, mail.ErrSend) {
		t.Fatalf("STARTTLS required from a server without it: %v", err)
	}
	for _, msg := range smtp.Messages(t) {
		if msg.Subject == "in clear" {
			t.Error("a mail that required STARTTLS went in clear")
		}
	}
}
