import CladeStore
import Foundation
import Hummingbird

/// envd's signed file URLs: a secure sandbox's `download_url` and `upload_url` carry, instead of
/// the `X-Access-Token` header, `signature=v1_<base64 SHA-256 of "path:operation:user:token"
/// (":expiration" when it expires)>` and `signature_expiration` (Unix seconds). The SDK signs
/// with the sandbox's access token, so clade checks the signature with the same token.
enum E2BSignedURL {
    enum Verdict: Equatable {
        case valid
        case expired
        case invalid
    }

    /// The signature the SDK computes for these fields.
    static func signature(path: String, operation: String, user: String, token: String, expiration: Int?) -> String {
        var raw = "\(path):\(operation):\(user):\(token)"
        if let expiration { raw += ":\(expiration)" }
        let hex = Array(Digest.of(Data(raw.utf8)).hex.utf8)
        var bytes: [UInt8] = []
        var index = 0
        while index + 1 < hex.count {
            bytes.append(UInt8(String(decoding: hex[index...index + 1], as: UTF8.self), radix: 16) ?? 0)
            index += 2
        }
        let encoded = Data(bytes).base64EncodedString()
        return "v1_" + String(encoded.prefix { $0 != "=" })
    }

    /// Whether `request` (a `/files` GET or POST) carries a good signature for `token`; nil when
    /// it carries none.
    static func check(_ request: Request, token: String, now: Date = Date()) -> Verdict? {
        let query = request.uri.queryParameters
        guard let signed = query.get("signature") else { return nil }
        let given = String(signed)
        let path = query.get("path").map { String($0) } ?? ""
        let user = query.get("username").map { String($0) } ?? ""
        let operation = request.method == .get ? "read" : "write"
        let expiration = query.get("signature_expiration").flatMap { Int(String($0)) }
        let expected = signature(path: path, operation: operation, user: user, token: token, expiration: expiration)
        // Compared in full whatever the first difference, so timing tells nothing of the token.
        let givenBytes = Array(given.utf8), expectedBytes = Array(expected.utf8)
        var difference: UInt8 = givenBytes.count == expectedBytes.count ? 0 : 1
        for (a, b) in zip(givenBytes, expectedBytes) { difference |= a ^ b }
        guard difference == 0 else { return .invalid }
        if let expiration, Double(expiration) < now.timeIntervalSince1970 { return .expired }
        return .valid
    }
}
