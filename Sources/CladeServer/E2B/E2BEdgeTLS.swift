import CLibCrypto
import Foundation
import HummingbirdCore
import HummingbirdTLS
import NIOSSL

/// The certificate and key the E2B listener serves HTTPS with. With them (and wildcard DNS for
/// the domain), the SDK reaches clade by `E2B_DOMAIN` alone, as it reaches E2B: the control
/// plane at `https://api.<domain>`, envd and the sandbox's ports at `https://<port>-<id>.<domain>`.
/// `E2B_API_URL` and `E2B_SANDBOX_URL`, which the SDK marks deprecated, are then not needed.
public struct E2BEdgeTLS: Sendable {
    public let certificatePath: String
    public let keyPath: String
    let serverConfiguration: TLSConfiguration

    /// The listener's server: HTTP/1.1 inside TLS.
    func serverBuilder() throws -> HTTPServerBuilder { try .tls(.http1(), tlsConfiguration: serverConfiguration) }

    /// A sandbox host as the SDK names it, to check the certificate against.
    static func sampleSandboxHost(domain: String) -> String { "49983-0123456789ab.\(domain)" }

    /// Loads the pair and checks it before the listener starts: a pair that clients would
    /// refuse (a key that is not the certificate's, a certificate that does not name the hosts)
    /// is refused here, with the reason, rather than at every client's handshake.
    public static func load(certificate: String, key: String, domain: String) throws -> E2BEdgeTLS {
        try checkPair(certificate: certificate, key: key, domain: domain)
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            // envd's Connect streams and the REST API are served over HTTP/1.1; offering h2 in
            // ALPN would make the SDK's client choose a protocol the listener does not speak.
            configuration.applicationProtocols = ["http/1.1"]
            return E2BEdgeTLS(certificatePath: certificate, keyPath: key, serverConfiguration: configuration)
        } catch {
            throw APIError(.badRequest, "cannot load the E2B listener's certificate \(certificate) and key \(key): \(error); give PEM files")
        }
    }

    private static func checkPair(certificate: String, key: String, domain: String) throws {
        let x509 = try readPEM(certificate, what: "certificate", notPEM: "\(certificate) holds no PEM certificate; give the certificate (and its chain) in PEM form") {
            PEM_read_bio_X509($0, nil, nil, nil)
        }
        defer { X509_free(x509) }
        let privateKey = try readPEM(key, what: "private key", notPEM: "\(key) holds no unencrypted PEM private key; give the key in PEM form, without a passphrase") {
            PEM_read_bio_PrivateKey($0, nil, nil, nil)
        }
        defer { EVP_PKEY_free(privateKey) }
        guard X509_check_private_key(x509, privateKey) == 1 else {
            throw APIError(.badRequest, "the private key \(key) is not the key of the certificate \(certificate); give the key the certificate was issued for")
        }
        for host in ["api.\(domain)", sampleSandboxHost(domain: domain)] where X509_check_host(x509, host, host.utf8.count, 0, nil) != 1 {
            throw APIError(
                .badRequest,
                "the certificate \(certificate) does not name \(host); the E2B SDK asks for api.\(domain) and <port>-<sandbox id>.\(domain), so issue it for *.\(domain) (or give --e2b-domain the domain it was issued for)")
        }
    }

    /// The first PEM object `read` finds in the file at `path`; the caller frees it.
    private static func readPEM(_ path: String, what: String, notPEM: String, _ read: (OpaquePointer) -> OpaquePointer?) throws -> OpaquePointer {
        guard let file = BIO_new_file(path, "r") else {
            throw APIError(.badRequest, "cannot read the E2B listener's \(what) \(path): \(String(cString: strerror(errno)))")
        }
        defer { BIO_free(file) }
        guard let object = read(file) else { throw APIError(.badRequest, notPEM) }
        return object
    }
}
