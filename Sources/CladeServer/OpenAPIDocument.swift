/// The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`.
/// `Tests/CladeServerTests` checks that every route the router registers is documented here.
enum OpenAPIDocument {
    static let json = #"""
{
 "components": {
  "schemas": {
   "BakeRequest": {
    "properties": {
     "image": {
      "type": "string"
     },
     "memory_mib": {
      "type": "integer"
     },
     "tag": {
      "type": "string"
     },
     "vcpus": {
      "type": "integer"
     },
     "warm": {
      "type": "string"
     }
    },
    "required": [
     "tag"
    ],
    "type": "object"
   },
   "BranchRequest": {
    "properties": {
     "mode": {
      "enum": [
       "diff",
       "full"
      ],
      "type": "string"
     },
     "tag": {
      "type": "string"
     }
    },
    "type": "object"
   },
   "Error": {
    "properties": {
     "error": {
      "type": "string"
     }
    },
    "required": [
     "error"
    ],
    "type": "object"
   },
   "ExecRequest": {
    "properties": {
     "args": {
      "items": {
       "type": "string"
      },
      "type": "array"
     },
     "cwd": {
      "type": "string"
     },
     "env": {
      "additionalProperties": {
       "type": "string"
      },
      "type": "object"
     },
     "stdin": {
      "type": "string"
     },
     "timeout_secs": {
      "type": "number"
     }
    },
    "required": [
     "args"
    ],
    "type": "object"
   },
   "ExecResult": {
    "properties": {
     "exit_code": {
      "type": "integer"
     },
     "stderr": {
      "type": "string"
     },
     "stdout": {
      "type": "string"
     },
     "timed_out": {
      "type": "boolean"
     }
    },
    "required": [
     "stdout",
     "stderr",
     "exit_code"
    ],
    "type": "object"
   },
   "FileWrite": {
    "properties": {
     "content": {
      "description": "base64",
      "type": "string"
     },
     "mode": {
      "type": "integer"
     },
     "path": {
      "type": "string"
     }
    },
    "required": [
     "path",
     "content"
    ],
    "type": "object"
   },
   "Job": {
    "properties": {
     "created_at_unix": {
      "type": "integer"
     },
     "done": {
      "type": "integer"
     },
     "error": {
      "type": "string"
     },
     "id": {
      "type": "string"
     },
     "kind": {
      "type": "string"
     },
     "result": {
      "type": "string"
     },
     "state": {
      "enum": [
       "running",
       "succeeded",
       "failed",
       "interrupted"
      ],
      "type": "string"
     },
     "step": {
      "type": "string"
     },
     "total": {
      "type": "integer"
     }
    },
    "required": [
     "id",
     "kind",
     "state"
    ],
    "type": "object"
   },
   "JobRequest": {
    "properties": {
     "ancestors": {
      "type": "boolean"
     },
     "force": {
      "type": "boolean"
     },
     "insecure": {
      "type": "boolean"
     },
     "kind": {
      "enum": [
       "pack",
       "push",
       "pull"
      ],
      "type": "string"
     },
     "output": {
      "type": "string"
     },
     "password": {
      "type": "string"
     },
     "reference": {
      "type": "string"
     },
     "tag": {
      "type": "string"
     },
     "username": {
      "type": "string"
     }
    },
    "required": [
     "kind"
    ],
    "type": "object"
   },
   "Sandbox": {
    "properties": {
     "created_at_unix": {
      "type": "integer"
     },
     "generation": {
      "type": "string"
     },
     "guest_addr": {
      "description": "host:port of the guest agent",
      "type": "string"
     },
     "id": {
      "type": "string"
     },
     "image": {
      "type": "string"
     },
     "memory_mib": {
      "type": "integer"
     },
     "pid": {
      "type": "integer"
     },
     "snapshot_tag": {
      "type": "string"
     },
     "state": {
      "enum": [
       "booting",
       "running",
       "paused",
       "standby",
       "dead"
      ],
      "type": "string"
     },
     "vcpus": {
      "type": "integer"
     }
    },
    "required": [
     "id",
     "guest_addr",
     "created_at_unix",
     "state"
    ],
    "type": "object"
   },
   "Snapshot": {
    "properties": {
     "branched_from": {
      "type": "string"
     },
     "created_at_unix": {
      "type": "integer"
     },
     "dir": {
      "type": "string"
     },
     "id": {
      "type": "string"
     },
     "image": {
      "type": "string"
     },
     "memory_mib": {
      "type": "integer"
     },
     "parent": {
      "type": "string"
     },
     "tag": {
      "type": "string"
     },
     "vcpus": {
      "type": "integer"
     }
    },
    "required": [
     "tag",
     "dir",
     "created_at_unix",
     "id"
    ],
    "type": "object"
   },
   "SpawnRequest": {
    "properties": {
     "n": {
      "maximum": 64,
      "minimum": 1,
      "type": "integer"
     },
     "snapshot_tag": {
      "type": "string"
     }
    },
    "required": [
     "snapshot_tag"
    ],
    "type": "object"
   }
  },
  "securitySchemes": {
   "bearer": {
    "scheme": "bearer",
    "type": "http"
   }
  }
 },
 "info": {
  "description": "forkd-compatible v1 routes plus clade's own. With --token-file every route but /healthz needs Authorization: Bearer <token>. Errors are {\"error\": \"...\"}.",
  "title": "clade daemon API",
  "version": "0.7.0"
 },
 "openapi": "3.1.0",
 "paths": {
  "/healthz": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "properties": {
          "ok": {
           "type": "boolean"
          }
         },
         "type": "object"
        }
       }
      },
      "description": "success"
     }
    },
    "security": [],
    "summary": "liveness; never needs a token"
   }
  },
  "/metrics": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "text/plain": {
        "schema": {
         "type": "string"
        }
       }
      },
      "description": "metrics"
     }
    },
    "summary": "Prometheus text exposition"
   }
  },
  "/openapi.json": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      },
      "description": "success"
     }
    },
    "summary": "this document"
   }
  },
  "/v1/jobs": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "items": {
          "$ref": "#/components/schemas/Job"
         },
         "type": "array"
        }
       }
      },
      "description": "success"
     }
    },
    "summary": "list jobs"
   },
   "post": {
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/JobRequest"
       }
      }
     },
     "required": true
    },
    "responses": {
     "202": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Job"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "start a pack, push or pull job (clade)"
   }
  },
  "/v1/jobs/{id}": {
   "get": {
    "parameters": [
     {
      "description": "job id",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Job"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "poll a job"
   }
  },
  "/v1/sandboxes": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "items": {
          "$ref": "#/components/schemas/Sandbox"
         },
         "type": "array"
        }
       }
      },
      "description": "success"
     }
    },
    "summary": "list live sandboxes"
   },
   "post": {
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/SpawnRequest"
       }
      }
     },
     "required": true
    },
    "responses": {
     "201": {
      "content": {
       "application/json": {
        "schema": {
         "items": {
          "$ref": "#/components/schemas/Sandbox"
         },
         "type": "array"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     },
     "503": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "too many forks or branches running; retry after Retry-After"
     }
    },
    "summary": "fork n children of a snapshot"
   }
  },
  "/v1/sandboxes/{id}": {
   "delete": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "204": {
      "description": "no content"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "kill a sandbox and remove its files"
   },
   "get": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Sandbox"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "one sandbox"
   }
  },
  "/v1/sandboxes/{id}/branch": {
   "post": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/BranchRequest"
       }
      }
     },
     "required": true
    },
    "responses": {
     "201": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Snapshot"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     },
     "409": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "tag taken or sandbox not running"
     },
     "503": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "too many forks or branches running"
     }
    },
    "summary": "snapshot a running sandbox into a new tag, keep it running"
   }
  },
  "/v1/sandboxes/{id}/exec": {
   "post": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/ExecRequest"
       }
      }
     },
     "required": true
    },
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ExecResult"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     },
     "409": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "the sandbox is not running"
     }
    },
    "summary": "run a command in the sandbox"
   }
  },
  "/v1/sandboxes/{id}/files": {
   "get": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     },
     {
      "description": "absolute path in the guest",
      "in": "query",
      "name": "path",
      "required": false,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "read a guest file (clade); ?path=/abs/path"
   },
   "put": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/FileWrite"
       }
      }
     },
     "required": true
    },
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "write a guest file atomically (clade)"
   }
  },
  "/v1/sandboxes/{id}/ping": {
   "post": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     },
     "409": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "the sandbox is not running"
     }
    },
    "summary": "round trip to the guest agent"
   }
  },
  "/v1/sandboxes/{id}/resume": {
   "post": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Sandbox"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "resume a standby sandbox (clade)"
   }
  },
  "/v1/sandboxes/{id}/standby": {
   "post": {
    "parameters": [
     {
      "description": "sandbox id, 12 lowercase hex digits",
      "in": "path",
      "name": "id",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "put the sandbox on standby (clade)"
   }
  },
  "/v1/snapshots": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "items": {
          "$ref": "#/components/schemas/Snapshot"
         },
         "type": "array"
        }
       }
      },
      "description": "success"
     }
    },
    "summary": "list snapshots"
   },
   "post": {
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/BakeRequest"
       }
      }
     },
     "required": true
    },
    "responses": {
     "201": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Snapshot"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     },
     "409": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "tag taken"
     },
     "503": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "too many forks or branches running; retry after Retry-After"
     }
    },
    "summary": "bake a snapshot from an image (clade)"
   }
  },
  "/v1/snapshots/{tag}": {
   "delete": {
    "parameters": [
     {
      "description": "snapshot tag",
      "in": "path",
      "name": "tag",
      "required": true,
      "schema": {
       "type": "string"
      }
     },
     {
      "description": "true to remove dependents",
      "in": "query",
      "name": "cascade",
      "required": false,
      "schema": {
       "type": "string"
      }
     },
     {
      "description": "true to remove despite dependents",
      "in": "query",
      "name": "force",
      "required": false,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "204": {
      "description": "no content"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     },
     "409": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "sandboxes or snapshots depend on it"
     }
    },
    "summary": "remove a snapshot; ?cascade=true also removes its sandboxes and descendants, ?force=true removes the name while forks keep running"
   },
   "get": {
    "parameters": [
     {
      "description": "snapshot tag",
      "in": "path",
      "name": "tag",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Snapshot"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "one snapshot"
   }
  },
  "/v1/snapshots/{tag}/info": {
   "get": {
    "parameters": [
     {
      "description": "snapshot tag",
      "in": "path",
      "name": "tag",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "properties": {
          "ancestors": {"items": {"type": "string"}, "type": "array"},
          "child_snapshots": {"items": {"type": "string"}, "type": "array"},
          "dependent_sandboxes": {"items": {"type": "string"}, "type": "array"},
          "descendants": {"items": {"type": "string"}, "type": "array"},
          "logical_bytes": {"type": "integer"},
          "metadata": {"description": "the snapshot's snapshot.json", "type": "object"},
          "physical_bytes": {"type": "integer"}
         },
         "type": "object"
        }
       }
      },
      "description": "success"
     },
     "400": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "bad input (the message names the field)"
     },
     "401": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "missing or wrong bearer token"
     },
     "404": {
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Error"
        }
       }
      },
      "description": "no such sandbox or snapshot"
     }
    },
    "summary": "metadata, sizes and dependents"
   }
  },
  "/version": {
   "get": {
    "responses": {
     "200": {
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      },
      "description": "success"
     }
    },
    "summary": "daemon and API version"
   }
  }
 },
 "security": [
  {
   "bearer": []
  }
 ]
}
"""#
}
