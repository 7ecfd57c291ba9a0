package guacamole

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// JSONAuth is the payload of Guacamole's encrypted JSON authentication
// (guacamole-auth-json): who the user is, until when, and the connections given.
type JSONAuth struct {
	Username    string                    `json:"username"`
	Expires     int64                     `json:"expires,omitempty"` // Unix milliseconds
	Connections map[string]JSONConnection `json:"connections"`
}

// JSONConnection is one connection in a JSONAuth.
type JSONConnection struct {
	Protocol   string            `json:"protocol"`
	Parameters map[string]string `json:"parameters"`
}

// EncryptedJSONToken makes the "data" value guacamole-auth-json accepts: the JSON
// signed with HMAC-SHA256 (signature first), encrypted with AES-128-CBC under a zero
// IV with PKCS#7 padding, in standard base64. key is the 16-byte json-secret-key
// (configured in Guacamole as 32 hex digits).
func EncryptedJSONToken(key []byte, payload JSONAuth) (string, error) {
	if len(key) != 16 {
		return "", fmt.Errorf("%w: json-secret-key has %d bytes, want 16", ErrInvalid, len(key))
	}
	if payload.Username == "" {
		return "", fmt.Errorf("%w: json auth without username", ErrInvalid)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("encode json auth: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	plain := append(mac.Sum(nil), data...)
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", fmt.Errorf("json auth cipher: %w", err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out), nil
}
