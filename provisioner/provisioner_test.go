package provisioner_test

import (
	"testing"

	"github.com/calipsoplus/calipso/provisioner"
)

func TestLinkURL(t *testing.T) {
	tests := []struct {
		name, protocol, host string
		port                 int
		token, want          string
	}{
		{"notebook with its token", "http", "desk.example.org", 31000, "abc123", "http://desk.example.org:31000/?token=abc123"},
		{"token is escaped", "http", "desk.example.org", 31000, "a&b=c", "http://desk.example.org:31000/?token=a%26b%3Dc"},
		{"no token yet", "http", "10.0.0.5", 8888, "", "http://10.0.0.5:8888/"},
		{"IPv6 host", "http", "::1", 8888, "t", "http://[::1]:8888/?token=t"},
		{"cluster service name", "http", "calipso-x-1.ns.svc", 8888, "", "http://calipso-x-1.ns.svc:8888/"},
		{"vnc desktop", "vnc", "desk.example.org", 31000, "t", ""},
		{"rdp desktop", "rdp", "desk.example.org", 31000, "", ""},
		{"no port published", "http", "desk.example.org", 0, "t", ""},
		{"no host", "http", "", 8888, "t", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := provisioner.LinkURL(tt.protocol, tt.host, tt.port, tt.token); got != tt.want {
				t.Fatalf("LinkURL = %q, want %q", got, tt.want)
			}
		})
	}
}
