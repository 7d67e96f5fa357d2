import socket
import sys  # chatlib: the one change to the seed: host and port can be given

servidor = sys.argv[1] if len(sys.argv) > 1 else '127.0.0.1'  # seed: '192.168.1.110'
puerto_servidor = int(sys.argv[2]) if len(sys.argv) > 2 else 5000

servidor_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

servidor_socket.bind((servidor, puerto_servidor))
servidor_socket.listen()

print(f"Servidor esperando conexion en {servidor} {puerto_servidor}")

conexion,address = servidor_socket.accept()
print(f"Conexion establecida {conexion}")

while True:
    mensaje_recibido = conexion.recv(1024)
    print(f"Mensaje del cliente: {mensaje_recibido.decode()}")

    respuesta_al_cliente = input("Escribe tur respuesta: ")
    conexion.sendall(respuesta_al_cliente.encode())
    conexion.close()
