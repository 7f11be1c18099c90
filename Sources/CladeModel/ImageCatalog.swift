import CladeStore
import Foundation

/// Named images, one JSON file each under `images/`, indexed in the catalog.
public struct ImageCatalog: Sendable {
    public let home: CladeHome

    public init(home: CladeHome) { self.home = home }

    private func url(_ name: String) -> URL { home.images.appendingPathComponent("\(name).json") }

    public func get(_ name: String) throws -> ImageRecord? {
        try Names.validate(name, kind: "image")
        return try JSONFiles.read(ImageRecord.self, from: url(name))
    }

    public func require(_ name: String) throws -> ImageRecord {
        guard let record = try get(name) else {
            let hint = name == "default"
                ? "it is built automatically on first use"
                : "make it with `clade image pull REF --name \(name)`, `clade image import PATH --name \(name)` or `clade image build --debian SUITE --name \(name)`, or list images with `clade image ls`"
            throw ModelError.notFound(kind: "image", name: name, hint: hint)
        }
        return record
    }

    public func put(_ record: ImageRecord) throws {
        try Names.validate(record.name, kind: "image")
        try home.prepare()
        try JSONFiles.write(record, to: url(record.name))
        try CatalogDatabase.shared(home).write { try CatalogRows.putImage(record, in: $0) }
    }

    public func remove(_ name: String) throws {
        guard try get(name) != nil else {
            throw ModelError.notFound(kind: "image", name: name, hint: "list images with `clade image ls`")
        }
        try FileSystem.remove(url(name))
        try CatalogDatabase.shared(home).write { try CatalogRows.removeImage(name, in: $0) }
    }

    public func list() throws -> [ImageRecord] {
        try CatalogDatabase.shared(home).read { try CatalogRows.images(in: $0) }
    }
}
