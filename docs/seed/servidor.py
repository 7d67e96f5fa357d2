import socket

servidor = '192.168.1.110'
puerto_servidor = 5000

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
