import CladeModel
import CladeStore
import Foundation

/// An OCI content descriptor.
public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?
    public var artifactType: String?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, artifactType: String? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.artifactType = artifactType
    }

    func annotation(_ key: String) -> String? { annotations?[key] }
}

/// An OCI image manifest (schema 2) carrying one clade snapshot.
public struct Manifest: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(config: Descriptor, layers: [Descriptor], annotations: [String: String]) {
        schemaVersion = 2
        mediaType = MediaType.imageManifest
        artifactType = MediaType.snapshotArtifact
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An OCI image index (`index.json` of a layout).
public struct ImageIndex: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]

    public init(manifests: [Descriptor]) {
        schemaVersion = 2
        mediaType = MediaType.imageIndex
        self.manifests = manifests
    }
}

/// The `oci-layout` marker file.
struct LayoutMarker: Codable {
    var imageLayoutVersion: String
}

/// JSON the way packs are written: sorted keys, so the same content always has the same digest.
enum CanonicalJSON {
    static func encode(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(value)
    }

    static func decode<T: Decodable>(_ type: T.Type, from data: Data, what: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(type, from: data)
        } catch let error as DecodingError {
            throw PackError.malformed(what: what, reason: error.fieldDescription)
        } catch let error as PackError {
            throw error
        } catch let error as ModelError {
            throw error
        } catch {
            throw PackError.malformed(what: what, reason: "\(error)")
        }
    }
}
