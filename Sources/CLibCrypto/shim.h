// SHA-256 from the host's OpenSSL (Debian's libssl-dev): the one primitive clade needs, without
// building a second vendored copy of BoringSSL beside swift-nio-ssl's. The low-level SHA256_*
// calls keep a digest in progress a plain value; OpenSSL 3 marks them deprecated but keeps them.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
// The E2B listener's certificate checks (the key is the certificate's; the certificate names
// the hosts the SDK will ask for), with OpenSSL's own host-name matching.
#include <openssl/pem.h>
#include <openssl/x509v3.h>
// The egress proxy's interception authority: an EC key pair and certificates issued with it.
#include <openssl/ec.h>
#include <openssl/rand.h>
