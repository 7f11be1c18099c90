#if canImport(Glibc)
import Glibc
#endif
import CLibCrypto
import CladeStore
import Foundation
import NIOConcurrencyHelpers
import NIOSSL

/// The certificate authority the egress proxy ends a guest's TLS with when a transform changes
/// its HTTPS requests: one per store (`state/egress-ca/`), made on first use, and trusted only by
/// the guests of sandboxes whose policy has transforms (clade adds it to their trust store). The
/// proxy issues each host a certificate of its own, in memory, with the host's host key.
final class EgressAuthority: Sendable {
    /// The authority's certificate in PEM form: what a guest adds to its trust store.
    let certificatePEM: String
    fileprivate let authorityCertificate: OwnedX509
    fileprivate let authorityKey: OwnedKey
    /// The key of every host certificate; made per daemon, never written anywhere.
    fileprivate let hostKey: OwnedKey
    private let hostKeyPEM: String
    private let issued = NIOLockedValueBox<[String: (context: NIOSSLContext, at: Date)]>([:])

    /// Host certificates are issued for a week and replaced after a day.
    static let hostValidityDays = 7
    static let reissueAfter: TimeInterval = 86_400

    /// Loads the authority of the store whose state directory is `state`, making it first if
    /// needed, with a new host key for the certificates this process issues.
    static func load(state: URL) throws -> EgressAuthority {
        let (certificate, key) = try files(state: state)
        let hostKey = try OwnedKey.generate()
        return EgressAuthority(
            certificatePEM: try certificate.pem(), authorityCertificate: certificate, authorityKey: key, hostKey: hostKey, hostKeyPEM: try hostKey.pem())
    }

    /// The authority's certificate in PEM form, making the authority first if needed: what a
    /// guest is given to trust (no host key is made for it).
    static func certificatePEM(state: URL) throws -> String { try files(state: state).certificate.pem() }

    /// The authority's certificate and key from `state/egress-ca/`, made first if missing.
    private static func files(state: URL) throws -> (certificate: OwnedX509, key: OwnedKey) {
        let directory = state.appendingPathComponent("egress-ca")
        let certificateFile = directory.appendingPathComponent("ca.pem"), keyFile = directory.appendingPathComponent("ca.key")
        if !FileManager.default.fileExists(atPath: directory.path) {
            // Made whole beside it and renamed into place, so two processes making it at once
            // cannot leave one's key beside the other's certificate: the second rename fails.
            let draft = state.appendingPathComponent(".egress-ca-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            try FileManager.default.createDirectory(at: draft, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            defer { try? FileSystem.remove(draft) }
            let key = try OwnedKey.generate()
            let certificate = try OwnedX509.issue(commonName: "clade egress interception authority", publicKey: key, signer: nil, host: nil, days: 3650)
            try FileSystem.writeAtomically(Data(try key.pem().utf8), to: draft.appendingPathComponent("ca.key"), mode: 0o600)
            try FileSystem.writeAtomically(Data(try certificate.pem().utf8), to: draft.appendingPathComponent("ca.pem"), mode: 0o644)
            _ = rename(draft.path, directory.path)
        }
        let certificate = try OwnedX509.read(certificateFile)
        let key = try OwnedKey.read(keyFile)
        guard X509_check_private_key(certificate.pointer, key.pointer) == 1 else {
            throw EgressAuthorityError("\(keyFile.path) is not the key of \(certificateFile.path); remove both and clade makes a new authority (guests trusting the old one must be restarted)")
        }
        return (certificate, key)
    }

    private init(certificatePEM: String, authorityCertificate: OwnedX509, authorityKey: OwnedKey, hostKey: OwnedKey, hostKeyPEM: String) {
        self.certificatePEM = certificatePEM
        self.authorityCertificate = authorityCertificate
        self.authorityKey = authorityKey
        self.hostKey = hostKey
        self.hostKeyPEM = hostKeyPEM
    }

    /// A TLS server context presenting a certificate for `host`, issued on first use.
    func serverContext(for host: String) throws -> NIOSSLContext {
        let name = host.lowercased()
        if let cached = issued.withLockedValue({ $0[name] }), Date().timeIntervalSince(cached.at) < Self.reissueAfter { return cached.context }
        let certificate = try hostCertificate(for: name)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(bytes: Array(try certificate.pem().utf8), format: .pem))],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(hostKeyPEM.utf8), format: .pem)))
        configuration.applicationProtocols = ["http/1.1"]
        let context = try NIOSSLContext(configuration: configuration)
        issued.withLockedValue { $0[name] = (context, Date()) }
        return context
    }
}

extension EgressAuthority {
    /// A certificate for `host` signed by the authority, with the daemon's host key.
    func hostCertificate(for host: String) throws -> OwnedX509 {
        try OwnedX509.issue(commonName: String(host.prefix(64)), publicKey: hostKey, signer: (authorityCertificate, authorityKey), host: host, days: Self.hostValidityDays)
    }
}

struct EgressAuthorityError: Error, CategorizedError, CustomStringConvertible {
    let description: String
    var category: ErrorCategory { .internal }
    init(_ description: String) { self.description = description }
}

/// An `EVP_PKEY` freed with its owner.
final class OwnedKey: @unchecked Sendable {
    let pointer: OpaquePointer
    private init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }

    /// A new P-256 key.
    static func generate() throws -> OwnedKey {
        guard let context = EVP_PKEY_CTX_new_id(NID_X9_62_id_ecPublicKey, nil) else { throw EgressAuthorityError("OpenSSL cannot make an EC key context") }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1, EVP_PKEY_CTX_set_ec_paramgen_curve_nid(context, NID_X9_62_prime256v1) == 1,
            EVP_PKEY_keygen(context, &key) == 1, let key
        else { throw EgressAuthorityError("OpenSSL cannot generate a P-256 key") }
        return OwnedKey(key)
    }

    static func read(_ file: URL) throws -> OwnedKey {
        OwnedKey(try readPEM(file) { PEM_read_bio_PrivateKey($0, nil, nil, nil) })
    }

    func pem() throws -> String { try writePEM { PEM_write_bio_PrivateKey($0, pointer, nil, nil, 0, nil, nil) } }
}

/// An `X509` freed with its owner.
final class OwnedX509: @unchecked Sendable {
    let pointer: OpaquePointer
    private init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_free(pointer) }

    static func read(_ file: URL) throws -> OwnedX509 {
        OwnedX509(try readPEM(file) { PEM_read_bio_X509($0, nil, nil, nil) })
    }

    func pem() throws -> String { try writePEM { PEM_write_bio_X509($0, pointer) } }

    /// A certificate for `publicKey`: an authority's own (no `signer`, no `host`) or a server
    /// certificate for `host` signed by `signer`.
    static func issue(commonName: String, publicKey: OwnedKey, signer: (certificate: OwnedX509, key: OwnedKey)?, host: String?, days: Int) throws -> OwnedX509 {
        guard let certificate = X509_new() else { throw EgressAuthorityError("OpenSSL cannot allocate a certificate") }
        let owned = OwnedX509(certificate)
        var serial = [UInt8](repeating: 0, count: 16)
        guard RAND_bytes(&serial, Int32(serial.count)) == 1 else { throw EgressAuthorityError("OpenSSL has no random bytes for a serial number") }
        serial[0] &= 0x7f
        let number = BN_bin2bn(serial, Int32(serial.count), nil)
        defer { BN_free(number) }
        let name = X509_get_subject_name(certificate)
        let mbstringASCII: Int32 = 0x1001
        guard X509_set_version(certificate, 2) == 1, BN_to_ASN1_INTEGER(number, X509_get_serialNumber(certificate)) != nil,
            X509_gmtime_adj(X509_getm_notBefore(certificate), -3600) != nil,
            X509_gmtime_adj(X509_getm_notAfter(certificate), days * 86_400) != nil,
            X509_set_pubkey(certificate, publicKey.pointer) == 1,
            X509_NAME_add_entry_by_txt(name, "CN", mbstringASCII, commonName, -1, -1, 0) == 1,
            X509_set_issuer_name(certificate, signer.map { X509_get_subject_name($0.certificate.pointer) } ?? name) == 1
        else { throw EgressAuthorityError("OpenSSL cannot fill in a certificate for \(commonName)") }
        let extensions: [(Int32, String)] = host.map { host in
            [(NID_basic_constraints, "critical,CA:FALSE"), (NID_key_usage, "critical,digitalSignature"), (NID_ext_key_usage, "serverAuth"),
             (NID_subject_alt_name, "DNS:\(host)"), (NID_authority_key_identifier, "keyid")]
        } ?? [(NID_basic_constraints, "critical,CA:TRUE,pathlen:0"), (NID_key_usage, "critical,keyCertSign,cRLSign"), (NID_subject_key_identifier, "hash")]
        var context = X509V3_CTX()
        X509V3_set_ctx(&context, signer?.certificate.pointer ?? certificate, certificate, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else { throw EgressAuthorityError("OpenSSL refused the extension '\(value)'") }
            defer { X509_EXTENSION_free(ext) }
            guard X509_add_ext(certificate, ext, -1) == 1 else { throw EgressAuthorityError("OpenSSL cannot add the extension '\(value)'") }
        }
        guard X509_sign(certificate, (signer?.key ?? publicKey).pointer, EVP_sha256()) > 0 else {
            throw EgressAuthorityError("OpenSSL cannot sign the certificate for \(commonName)")
        }
        return owned
    }
}

/// The first PEM object `read` finds in `file`.
private func readPEM(_ file: URL, _ read: (OpaquePointer) -> OpaquePointer?) throws -> OpaquePointer {
    guard let bio = BIO_new_file(file.path, "r") else { throw EgressAuthorityError("cannot read \(file.path): \(String(cString: strerror(errno)))") }
    defer { BIO_free(bio) }
    guard let object = read(bio) else { throw EgressAuthorityError("\(file.path) holds no PEM object; remove it and clade makes a new authority") }
    return object
}

/// What `write` puts into a memory BIO, as text.
private func writePEM(_ write: (OpaquePointer) -> Int32) throws -> String {
    guard let bio = BIO_new(BIO_s_mem()) else { throw EgressAuthorityError("OpenSSL cannot allocate a memory BIO") }
    defer { BIO_free(bio) }
    guard write(bio) == 1 else { throw EgressAuthorityError("OpenSSL cannot write PEM") }
    var start: UnsafeMutablePointer<CChar>?
    let length = withUnsafeMutablePointer(to: &start) { BIO_ctrl(bio, BIO_CTRL_INFO, 0, UnsafeMutableRawPointer($0)) }
    guard length > 0, let start else { throw EgressAuthorityError("OpenSSL wrote no PEM") }
    return String(decoding: UnsafeRawBufferPointer(start: start, count: length), as: UTF8.self)
}
